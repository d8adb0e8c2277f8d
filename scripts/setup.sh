#!/usr/bin/env bash
# Install everything ftcp needs on Debian, as root. Safe to run again: each step
# checks first and does nothing when it is already done.
#   1. Debian packages (Open vSwitch, Mininet, Redis, test tools)
#   2. .venv from Debian's python3 (--system-site-packages, so Mininet is visible)
#   3. the pinned Python packages: requirements-build.txt, then requirements.txt (run
#      time), requirements-test.txt and requirements-bench.txt (ryu 4.34 built the way
#      that works on 3.11)
#   4. ftcp itself, `pip install -e .` (pyproject.toml): the ftcp and ryu_apps packages
#      importable from anywhere, and the `ftcp` and `ftcp-agent` commands in .venv/bin
#   5. ftcp.pth in the venv: installs the eventlet shim (ryu_apps/eventlet_compat.py)
#      at interpreter start, so the stock .venv/bin/ryu-manager runs
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
say() { echo "setup: $*"; }

if [ "$(id -u)" -ne 0 ]; then
    echo "setup: run as root (apt, Open vSwitch, network namespaces)" >&2
    exit 2
fi

APT_PACKAGES=(openvswitch-switch mininet redis-server iperf3 ethtool tcpdump
              python3 python3-venv python3-dev iproute2 procps psmisc iputils-ping curl gcc socat nginx-light)
missing=()
for pkg in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
    say "installing Debian packages: ${missing[*]}"
    apt-get update -q
    # policy-rc.d may refuse to start the packaged daemons; the lab starts its own.
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}"
else
    say "Debian packages present"
fi

# Mininet is Debian's package, built for Debian's /usr/bin/python3; the venv must
# come from that interpreter (not a pyenv one) to see it.
PY=/usr/bin/python3
if ! .venv/bin/python -c 'import sys; sys.exit(0 if sys.base_prefix == "/usr" else 1)' 2>/dev/null; then
    say "creating .venv from $PY"
    rm -rf .venv
    "$PY" -m venv --system-site-packages .venv
fi

export PIP_DISABLE_PIP_VERSION_CHECK=1
stamp=.venv/.ftcp-requirements.sha256
want="$(cat requirements-build.txt requirements.txt requirements-test.txt requirements-bench.txt | sha256sum | cut -d' ' -f1)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    say "installing pinned Python packages"
    .venv/bin/python -m pip install -q -r requirements-build.txt
    # ryu 4.34's setup.py needs the old setuptools above: build against it.
    .venv/bin/python -m pip install -q --no-build-isolation \
        -r requirements.txt -r requirements-test.txt -r requirements-bench.txt
    echo "$want" > "$stamp"
else
    say "Python packages up to date"
fi

# ftcp, editable: the venv imports ftcp and ryu_apps from this checkout (and only those:
# topology, tests, bench and services import from the checkout's root, the directory
# ./run.sh and the docs run them from). Built against the venv's setuptools too, and
# without dependencies: requirements.txt above has them all, pinned. Done again when
# pyproject.toml changes or the venv's ftcp is another checkout's (a venv shared by
# several work trees follows the last one set up, as it always has).
stamp=.venv/.ftcp-package.sha256
want="$( (cat pyproject.toml; echo "$ROOT") | sha256sum | cut -d' ' -f1)"
where="$(cd / && "$ROOT/.venv/bin/python" -c 'import os, ftcp; print(os.path.realpath(ftcp.__path__[0]))' 2>/dev/null || true)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ] || [ "$where" != "$(realpath "$ROOT/ftcp")" ]; then
    say "installing ftcp from $ROOT (pip install -e .)"
    .venv/bin/python -m pip install -q --no-build-isolation --no-deps -e .
    echo "$want" > "$stamp"
else
    say "ftcp installed from $ROOT"
fi

# The eventlet shim must be in place before ryu-manager imports ryu.app.wsgi, which
# ryu/cmd/manager.py does at its top, before any app is loaded: only a .pth runs that
# early. ftcp.pth sorts after pip's __editable__.ftcp-*.pth, which makes ryu_apps
# importable. (Set-ups before pyproject.toml wrote the repository's path in it too,
# on a line of its own: rewritten here, the editable install does that now.)
site="$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
pth='import ryu_apps.eventlet_compat; ryu_apps.eventlet_compat.install()'
if [ "$(cat "$site/ftcp.pth" 2>/dev/null)" != "$pth" ]; then
    say "writing $site/ftcp.pth"
    printf '%s\n' "$pth" > "$site/ftcp.pth"
fi

ryu="$(.venv/bin/ryu-manager --version 2>&1)" || { echo "setup: .venv/bin/ryu-manager does not start" >&2; echo "$ryu" >&2; exit 1; }
say "ready: .venv/bin/ryu-manager $(echo "$ryu" | awk '{print $2}'), $(redis-server --version | awk '{print $3}'), $(ovs-vsctl --version | head -1)"
