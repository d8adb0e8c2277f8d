"""Takeovers run off the capture thread, one worker each: two services fail at once
and both are masked; a slow cold replay of one service runs while another service's
download goes on protected (capture never stops for it)."""

from ftcp.common.store import Store
from tests.support.faults import PORT, failed_over
from topology.lab import PRIMARY_IP, SERVICES, Lab

SECOND = PORT + 1


def test_two_services_failing_at_once_are_both_masked(run_dir):
    with Lab(service_cmd=SERVICES["demo"], service_port=PORT, run_dir=run_dir, more_ports=(SECOND,)) as lab:
        store = Store(lab.redis.url)
        clients = [lab.start_client(host, "reqresp", PRIMARY_IP, port, "--count", 3000, "--interval", 0.001,
                                    "--progress", 0.02) for host, port in (("c1", PORT), ("c2", SECOND))]
        for client in clients:
            client.wait_progress(received=20_000)
        lab.fail_primary("link")
        first, second = failed_over(store, "demo", 20, "done"), failed_over(store, f"demo-{SECOND}", 20, "done")
        assert (first["taken"], second["taken"]) == ("1", "1")
        for client in clients:
            res = client.result()
            assert res["ok"] and res["requests"] == 3000, res
        log = (lab.run_dir / "agent.log").read_text()
        assert "takeover of demo (epoch 1): 1 connection(s) ready" in log
        assert f"takeover of demo-{SECOND} (epoch 1): 1 connection(s) ready" in log


def test_a_slow_cold_replay_does_not_stop_capture_for_another_service(run_dir):
    """One hot slot: the download on the second service holds it; the 30 MB upload on
    the first is replayed cold from Redis when its service is migrated. Meanwhile
    the download stays protected with nothing missed, and is masked when the primary
    then fails."""
    with Lab(service_cmd=SERVICES["demo"], service_port=PORT, run_dir=run_dir, more_ports=(SECOND,),
             agent_args=("--max-hot", "1")) as lab:
        store = Store(lab.redis.url)
        down = lab.start_client("c1", "stream", PRIMARY_IP, SECOND, "--bytes", 60_000_000, "--progress", 0.02)
        down.wait_progress(received=1_000_000)
        up = lab.start_client("c2", "upload", PRIMARY_IP, PORT, "--bytes", 30_000_000, "--progress", 0.02)
        up.wait_progress(sent=29_000_000)
        code, body = lab.rest("POST", "/ftcp/services/demo/migrate", {})
        assert code == 200, body
        failed_over(store, "demo", 20, "done")
        log = (lab.run_dir / "agent.log").read_text()
        assert "takeover of demo (epoch 1): 1 connection(s) ready (0 hot)" in log
        assert up.result()["ok"]
        conn, = [c for c in (store.conn("b1", i) for i in store.service_conns(f"demo-{SECOND}", "b1")) if c]
        assert conn["status"] == "protected", conn["reason"]
        beat = store.agent("b1")
        assert beat["kernel_drops"] == "0"
        lab.fail_primary("link")
        failed_over(store, f"demo-{SECOND}", 20, "done")
        assert down.result()["ok"]
