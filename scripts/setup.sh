#!/usr/bin/env bash
# Install everything ftcp needs on Debian, as root. Safe to run again: each step
# checks first and does nothing when it is already done.
#   1. Debian packages (Open vSwitch, Mininet, Redis, test tools)
#   2. .venv from Debian's python3 (--system-site-packages, so Mininet is visible)
#   3. the pinned Python packages: requirements-build.txt, then requirements.txt (run
#      time), requirements-test.txt and requirements-bench.txt (ryu 4.34 built the way
#      that works on 3.11)
#   4. ftcp.pth in the venv: puts the repo on sys.path and installs the eventlet
#      shim (ryu_apps/eventlet_compat.py) so the stock .venv/bin/ryu-manager runs.
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

stamp=.venv/.ftcp-requirements.sha256
want="$(cat requirements-build.txt requirements.txt requirements-test.txt requirements-bench.txt | sha256sum | cut -d' ' -f1)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    say "installing pinned Python packages"
    export PIP_DISABLE_PIP_VERSION_CHECK=1
    .venv/bin/python -m pip install -q -r requirements-build.txt
    # ryu 4.34's setup.py needs the old setuptools above: build against it.
    .venv/bin/python -m pip install -q --no-build-isolation \
        -r requirements.txt -r requirements-test.txt -r requirements-bench.txt
    echo "$want" > "$stamp"
else
    say "Python packages up to date"
fi

site="$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
pth="$(printf '%s\nimport ryu_apps.eventlet_compat; ryu_apps.eventlet_compat.install()\n' "$ROOT")"
if [ "$(cat "$site/ftcp.pth" 2>/dev/null)" != "$pth" ]; then
    say "writing $site/ftcp.pth"
    printf '%s\n' "$pth" > "$site/ftcp.pth"
fi

.venv/bin/ryu-manager --version >/dev/null 2>&1 || { echo "setup: .venv/bin/ryu-manager does not start" >&2; .venv/bin/ryu-manager --version; exit 1; }
say "ready: .venv/bin/ryu-manager $(.venv/bin/ryu-manager --version 2>&1 | awk '{print $2}'), $(redis-server --version | awk '{print $3}'), $(ovs-vsctl --version | head -1)"
