"""The house's import rules, on what an import really loads (each in a fresh interpreter).

* The controller's core loads no Redis client, and Ryu only through ftcp/controller/of/
  (the one place that builds OpenFlow messages and frames).
* The agent loads no Ryu.
* The command-line client loads nothing but the standard library.
* ftcp/common/ loads nothing of the controller, the agent or the API.
"""
import json
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]

# Runs in the fresh interpreter: a finder that notes, for every ryu module imported, the
# module whose code asked for it (the first frame outside importlib and ryu itself).
PROBE = r"""
import importlib.abc, json, sys
origins = {}

class Watch(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "ryu" or name.startswith("ryu."):
            frame = sys._getframe(1)
            while frame is not None:
                mod = frame.f_globals.get("__name__", "")
                if not (mod.startswith("importlib") or mod == "ryu" or mod.startswith("ryu.")
                        or mod.startswith("_frozen_importlib")):
                    break
                frame = frame.f_back
            origins.setdefault(name, frame.f_globals.get("__name__", "?") if frame else "?")
        return None

sys.meta_path.insert(0, Watch())
for module in sys.argv[1:]:
    __import__(module)
print(json.dumps({"modules": sorted(sys.modules), "ryu_from": origins}))
"""


def loads(*modules: str) -> dict:
    # -S: no site-packages .pth hooks (the venv's installs the eventlet shim and would
    # load ryu_apps in every interpreter); the venv's paths are given explicitly.
    paths = [str(ROOT)] + [p for p in sys.path if p.endswith(("site-packages", "dist-packages"))]
    code = f"import sys; sys.path[:0] = {paths!r}\n" + PROBE
    out = subprocess.run([sys.executable, "-S", "-c", code, *modules], capture_output=True, text=True,
                         cwd=ROOT, timeout=60)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def _product_modules(package: str) -> list:
    base = ROOT / package.replace(".", "/")
    return sorted(package + "." + ".".join(p.relative_to(base).with_suffix("").parts).replace(".__init__", "")
                  for p in base.rglob("*.py") if p.name != "__main__.py")


def top(name: str) -> str:
    return name.split(".")[0]


def test_controller_core_loads_no_redis_and_ryu_only_through_of():
    seen = loads("ftcp.controller.core")
    assert not [m for m in seen["modules"] if top(m) in ("redis", "hiredis")]
    assert seen["ryu_from"], "the core builds OpenFlow messages: it must load ryu (through of/)"
    outside = {ryu: origin for ryu, origin in seen["ryu_from"].items()
               if not origin.startswith("ftcp.controller.of.") and top(origin) != "ryu"}
    assert outside == {}


@pytest.mark.parametrize("module", [m for m in _product_modules("ftcp.controller")
                                    if not m.startswith("ftcp.controller.of") and m != "ftcp.controller.recorder"])
def test_no_controller_module_but_of_asks_for_ryu(module):
    seen = loads(module)
    assert {r: o for r, o in seen["ryu_from"].items() if not o.startswith("ftcp.controller.of.")} == {}


def test_agent_loads_no_ryu():
    seen = loads(*_product_modules("ftcp.agent"))
    assert not [m for m in seen["modules"] if top(m) in ("ryu", "ryu_apps", "eventlet")]
    assert not [m for m in seen["modules"] if m.startswith(("ftcp.controller", "ftcp.api"))]


def test_command_line_client_loads_only_the_standard_library():
    seen = loads("ftcp.api.client")
    foreign = [m for m in seen["modules"] if top(m) not in sys.stdlib_module_names and top(m) != "ftcp"
               and m != "__main__"]
    assert foreign == []
    assert [m for m in seen["modules"] if top(m) == "ftcp"] == ["ftcp", "ftcp.api", "ftcp.api.client"]


def test_common_loads_nothing_of_the_deployables():
    seen = loads(*_product_modules("ftcp.common"))
    assert not [m for m in seen["modules"] if m.startswith(("ftcp.controller", "ftcp.agent", "ftcp.api"))]
    assert not [m for m in seen["modules"] if top(m) in ("ryu", "ryu_apps")]


def test_the_probe_sees_a_violation():
    """The rules above can fail: ryu asked for by a module outside of/ is caught."""
    seen = loads("tests.support.fake_oftable")
    assert any(origin == "tests.support.fake_oftable" for origin in seen["ryu_from"].values())
