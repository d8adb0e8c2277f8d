"""pyproject.toml: the package ships every module of ftcp (all its subpackages) and
ryu_apps, and nothing of the lab, tests or benchmarks; its commands resolve to callables;
its dependencies are requirements.txt's pins. And the venv that scripts/setup.sh made
has it installed: ftcp, ryu_apps (with the eventlet shim) and the commands work from a
directory that is not the checkout."""
import importlib
import importlib.metadata
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
PRODUCT = ("ftcp", "ryu_apps")
REQUIREMENTS = ("requirements-build.txt", "requirements.txt", "requirements-test.txt", "requirements-bench.txt")


def source_modules() -> set[str]:
    """ftcp/... and ryu_apps/... .py files of the checkout, as paths relative to it."""
    return {py.relative_to(ROOT).as_posix() for top in PRODUCT for py in (ROOT / top).rglob("*.py")}


def source_packages() -> set[str]:
    """Every directory of ftcp/ and ryu_apps/ that holds Python, as a dotted name."""
    return {".".join(Path(m).parent.parts) for m in source_modules()}


def declared_packages() -> set[str]:
    """The packages setuptools takes from pyproject.toml's [tool.setuptools] table."""
    from setuptools import find_namespace_packages, find_packages
    packages = PYPROJECT.get("tool", {}).get("setuptools", {}).get("packages")
    if isinstance(packages, list):
        return set(packages)
    find = (packages or {}).get("find", {})
    finder = find_namespace_packages if find.get("namespaces", True) else find_packages
    return {pkg for where in find.get("where", ["."])
            for pkg in finder(str(ROOT / where), include=find.get("include", ["*"]), exclude=find.get("exclude", []))}


def pins(name: str) -> dict[str, str]:
    """{normalised project name: version} of a requirements file's ``name==version`` lines."""
    out = {}
    for line in (ROOT / name).read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            project, sep, version = line.partition("==")
            assert sep and version, f"{name}: {line!r} is not pinned with =="
            out[norm(project)] = version.strip()
    return out


def norm(project: str) -> str:
    return re.sub(r"[-_.]+", "-", project).lower().strip()


def test_every_ftcp_subpackage_and_ryu_apps_is_declared():
    missing = source_packages() - declared_packages()
    assert not missing, (f"pyproject.toml does not ship {sorted(missing)} (a directory without __init__.py, "
                         "or one [tool.setuptools.packages] leaves out)")


def test_only_ftcp_and_ryu_apps_are_declared():
    extra = {pkg for pkg in declared_packages() if pkg.split(".")[0] not in PRODUCT}
    assert not extra, f"pyproject.toml ships {sorted(extra)}: the lab, tests, bench and services are not the product"


def test_the_wheel_holds_every_module(tmp_path):
    """A real (non-editable) wheel, built from a copy (a build writes build/ and
    *.egg-info next to pyproject.toml), with the venv's setuptools as setup.sh does."""
    src = tmp_path / "src"
    src.mkdir()
    shutil.copy(ROOT / "pyproject.toml", src)
    for top in PRODUCT:
        shutil.copytree(ROOT / top, src / top, ignore=shutil.ignore_patterns("__pycache__"))
    out = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                          "--no-index", "-w", str(tmp_path / "dist"), str(src)],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    wheel, = (tmp_path / "dist").glob("ftcp-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        entry_points = zf.read(next(n for n in names if n.endswith(".dist-info/entry_points.txt"))).decode()
    shipped = {n for n in names if n.endswith(".py")}
    assert source_modules() - shipped == set(), "modules missing from the wheel"
    assert shipped - source_modules() == set(), "the wheel ships modules that are not ftcp's or ryu_apps'"
    for name, target in PYPROJECT["project"]["scripts"].items():
        assert f"{name} = {target}" in entry_points


def resolve(target: str):
    module, _, attr = target.partition(":")
    obj = importlib.import_module(module)
    for part in filter(None, attr.split(".")):
        obj = getattr(obj, part)
    return obj


def test_the_commands_resolve_to_callables():
    scripts = PYPROJECT["project"]["scripts"]
    assert {"ftcp", "ftcp-agent"} <= set(scripts)   # the names the README uses
    for name, target in scripts.items():
        assert callable(resolve(target)), f"[project.scripts] {name} = {target!r} is not callable"


def test_the_venv_has_ftcp_installed_with_these_commands(tmp_path):
    try:
        dist = importlib.metadata.distribution("ftcp")
    except importlib.metadata.PackageNotFoundError:
        raise AssertionError("ftcp is not installed in this venv: run ./run.sh setup (pip install -e .)") from None
    installed = {ep.name: ep.value for ep in dist.entry_points if ep.group == "console_scripts"}
    assert installed == PYPROJECT["project"]["scripts"], "the venv's ftcp is stale: run ./run.sh setup"
    for name in installed:
        command = Path(sys.executable).parent / name
        out = subprocess.run([str(command), "--help"], cwd=tmp_path, capture_output=True, text=True, timeout=60)
        assert out.returncode == 0 and "usage:" in out.stdout, (name, out.stdout, out.stderr)


def test_the_product_imports_away_from_the_checkout(tmp_path):
    """-I: neither the current directory nor PYTHONPATH on sys.path; what imports comes
    from the venv's site-packages: the editable install and the eventlet shim's .pth."""
    code = ("import sys, ftcp.controller.core, ftcp.agent.cli, ftcp.api.client, ryu_apps, ryu.app.wsgi, eventlet.wsgi; "
            "assert hasattr(eventlet.wsgi, 'ALREADY_HANDLED'); "
            "assert not any(p in ('', '.') for p in sys.path)")
    out = subprocess.run([sys.executable, "-I", "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr


def test_dependencies_are_requirements_txt_pins():
    runtime = pins("requirements.txt")
    for dep in PYPROJECT["project"]["dependencies"]:
        project, sep, version = dep.partition("==")
        assert sep, f"pyproject.toml: {dep!r} is not pinned with =="
        assert runtime.get(norm(project)) == version.strip(), \
            f"pyproject.toml has {dep}, requirements.txt has {runtime.get(norm(project))}"


def test_a_project_pinned_in_several_requirements_files_has_one_version():
    seen: dict[str, tuple[str, str]] = {}
    for name in REQUIREMENTS:
        for project, version in pins(name).items():
            first = seen.setdefault(project, (name, version))
            assert first[1] == version, f"{project}: {first[1]} in {first[0]}, {version} in {name}"
