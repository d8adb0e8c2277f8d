"""What a lab leaves on the machine, recorded as it is made, and its removal.

A lab killed hard (SIGKILL, a crash) tears nothing down. The next lab in the same run
directory, or ``python -m topology clean``, removes what it left from what it recorded
there, and nothing else on the machine: the processes its pid files name
(topology/reaper.py checks each is still that process), the Mininet node shells (their
pid files are written as each node starts), the bridge, and the links it made in this
network namespace.
"""
from __future__ import annotations

import subprocess
from pathlib import Path

from topology.reaper import reap_all
from topology.reaper import record as record_pid

RECORD = "mininet.record"   # in the run directory: the bridge and root-namespace links the topology made


def cleanup_stale(run_dir: Path):
    """Remove what an earlier lab in ``run_dir`` that was killed hard may have left
    (mn -c style, but only what that lab recorded): the processes and Mininet host
    shells its pid files name, if they still are those processes (topology/reaper.py),
    then its bridge and the links it made in this namespace."""
    reap_all(run_dir)
    record = run_dir / RECORD
    try:
        made = [line.split() for line in record.read_text().splitlines() if line.strip()]
    except FileNotFoundError:
        return
    for kind, name in made:
        # (with Open vSwitch stopped, a bridge stays in its database: Mininet replaces it)
        if kind == "bridge":
            subprocess.run(["ovs-vsctl", "--timeout=5", "--if-exists", "del-br", name], capture_output=True)
    for kind, name in made:
        if kind == "link" and Path(f"/sys/class/net/{name}").exists():
            subprocess.run(["ip", "link", "del", name], capture_output=True)
    record.unlink()


def recording_mininet(run_dir: Path):
    """Mininet, recording into ``run_dir`` each node's shell as it starts (a pid file),
    the switches' bridges and the links' ends in this namespace, for ``cleanup_stale``."""
    from mininet.net import Mininet

    def note(*lines):
        with open(run_dir / RECORD, "a") as f:
            f.writelines(f"{line}\n" for line in lines)

    def shell(node):
        if node is not None:
            record_pid(run_dir / f"mininet-{node.name}.pid", node.pid)
        return node

    class RecordingMininet(Mininet):
        def addHost(self, *args, **kwargs):
            return shell(super().addHost(*args, **kwargs))

        def addSwitch(self, *args, **kwargs):
            switch = super().addSwitch(*args, **kwargs)
            note(f"bridge {switch.name}")
            return shell(switch)

        def addController(self, *args, **kwargs):
            return shell(super().addController(*args, **kwargs))

        def addLink(self, *args, **kwargs):
            link = super().addLink(*args, **kwargs)
            note(*(f"link {intf.name}" for intf in (link.intf1, link.intf2) if not intf.node.inNamespace))
            return link
    return RecordingMininet
