"""The stock .venv/bin/ryu-manager with the documented ryu.conf and services.yaml:
refuses a bad config with one clear line, protects the services on a hand-built
bridge (switch_config/setup_bridge.sh), and reinstalls the flows on reconnect."""
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from ftcp.controller.of import cookies
from ftcp.common.store import Store
from topology.lab import cleanup_stale
from topology.processes import ROOT, VENV_BIN, RedisServer, RyuManager, free_tcp_port, wait_for

BRIDGE = "ftcpbr0"
VETHS = {3: "ftcpv3", 4: "ftcpv4", 5: "ftcpv5"}  # the port numbers switch_config/services.yaml uses


def ftcp_flows():
    out = subprocess.run(["ovs-ofctl", "-O", "OpenFlow13", "dump-flows", BRIDGE],
                         capture_output=True, text=True, check=True).stdout
    return [line for line in out.splitlines() if f"cookie={cookies.COOKIE_MAGIC:#x}" in line]


def remove_bridge():
    subprocess.run(["ovs-vsctl", "--if-exists", "del-br", BRIDGE], capture_output=True)
    for name in VETHS.values():
        subprocess.run(["ip", "link", "del", name], capture_output=True)


@pytest.fixture
def lab_dir(run_dir):
    path = Path(run_dir)
    cleanup_stale(path)
    remove_bridge()
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    yield path
    remove_bridge()


def test_bad_config_refused_with_one_clear_error(lab_dir):
    bad = lab_dir / "bad.yaml"
    bad.write_text((ROOT / "switch_config/services.yaml").read_text().replace("port: 8000", "port: 80000"))
    proc = subprocess.run(
        [str(VENV_BIN / "ryu-manager"), "--config-file", "switch_config/ryu.conf",
         "--ofp-tcp-listen-port", str(free_tcp_port()), "ryu_apps/ftcp_app.py"],
        cwd=ROOT, env=dict(os.environ, FTCP_CONFIG=str(bad)), capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert "ftcp: invalid configuration: services[0].port: must be a TCP port number (1..65535), got 80000" \
        in proc.stderr
    assert "Traceback" not in proc.stderr


def test_documented_config_on_hand_built_bridge_and_reconnect(lab_dir):
    redis = RedisServer(lab_dir)
    ryu = None
    try:
        redis.wait_ready()
        store = Store(redis.url)
        port = free_tcp_port()

        def start_ryu():
            proc = RyuManager(lab_dir, ROOT / "switch_config/services.yaml", redis.url, port, free_tcp_port())
            proc.wait_ready()
            return proc

        ryu = start_ryu()
        for number, name in VETHS.items():
            subprocess.run(["ip", "link", "add", name, "type", "veth", "peer", "name", name + "p"], check=True)
            subprocess.run(["ip", "link", "set", name, "up"], check=True)
        port_args = [a for n, name in VETHS.items() for a in ("--port", f"{name}:{n}")]
        setup = [str(ROOT / "switch_config/setup_bridge.sh"), BRIDGE, "--controller", f"tcp:127.0.0.1:{port}",
                 "--dpid", "0000000000000001", *port_args, "--mirror", VETHS[5]]
        subprocess.run(setup, check=True, capture_output=True)
        subprocess.run(setup, check=True, capture_output=True)  # idempotent: a second run changes nothing
        # the mirror port is out of the switch's flooding (an access VLAN of its own)
        assert subprocess.run(["ovs-vsctl", "get", "port", VETHS[5], "tag"], capture_output=True,
                              text=True).stdout.strip() == "4094"

        def installed_after(after):
            for event_id, rec in store.events(after=after, block_ms=200):
                if rec["kind"] == "flows_installed" and rec["service"] == "web":
                    return event_id
            return None
        first = wait_for(lambda: installed_after("0"), 30, "flows_installed for service web", interval=0,
                         failed=ryu.died)
        assert store.service("web")["status"] == "protected"
        lines = ftcp_flows()
        # NORMAL default, 2 probe flows (answers, ARP), c2s and s2c mirrors, mirror-port
        # drop, drops of the service's own ports as clients (primary, backup), FIN and RST
        # hold (the documented services.yaml has a probe section)
        assert len(lines) == 10, lines
        assert any("nw_dst=10.0.0.10,tp_dst=8000 actions=output:3,output:5" in line for line in lines), lines
        # ovs-vswitchd publishes the connection state to OVSDB on its own schedule.
        subprocess.run(["ovs-vsctl", "--timeout=20", "wait-until", "controller", BRIDGE, "is_connected=true"],
                       check=True)

        # The controller goes away; the switch keeps its flows (fail_mode=secure).
        ryu.stop()
        subprocess.run(["ovs-ofctl", "-O", "OpenFlow13", "del-flows", BRIDGE], check=True)
        assert ftcp_flows() == []
        # It comes back: the switch reconnects and gets its flows again.
        ryu = start_ryu()
        wait_for(lambda: installed_after(first), 30, "flows reinstalled after reconnect", interval=0,
                 failed=ryu.died)
        assert len(ftcp_flows()) == 10
        log = (lab_dir / "ryu.log").read_text()
        assert "service web protected on switch 0000000000000001: 9 flows" in log
    finally:
        if ryu:
            ryu.stop()
        redis.stop()
