"""The REST API of the real ryu-manager in the lab: create a service and see its flows
on the switch, read a live connection's state, migrate a streaming connection to the
backup with byte-exact continuity, delete the service and see its flows gone."""
import subprocess

from ftcp import flows
from ftcp.config import service_cookie_id
from topology.clients import RunningClient
from topology.lab import PRIMARY_IP, SERVICES, Lab, wait_for

PORT, NEW_PORT = 7000, 7002


def service_flows(lab, name):
    prefix = f"cookie={(flows.COOKIE_MAGIC << 32 | service_cookie_id(name) << 8) >> 8:#x}"
    return [line for line in lab.flows().splitlines() if prefix in line]


def test_rest_in_the_lab(run_dir):
    with Lab(service_cmd=SERVICES["demo"], service_port=PORT, run_dir=run_dir,
             extra_primary_cmds=((SERVICES["demo"], NEW_PORT),)) as lab:
        # Create a service over REST: its flows appear on the switch.
        web = {"address": PRIMARY_IP, "port": NEW_PORT,
               "primary": {"port": "s1-eth3", "mac": "00:00:00:00:00:10"},
               "backups": [{"name": "b1", "address": "10.0.0.20", "data_port": "s1-eth4",
                            "mirror_port": "s1-eth5", "mac": "00:00:00:00:00:20"}]}
        assert lab.rest("PUT", "/ftcp/services/web", web, token=False)[0] == 401
        status, body = lab.rest("PUT", "/ftcp/services/web", web)
        assert status in (200, 201), body
        wait_for(lambda: len(service_flows(lab, "web")) >= 3, 10, "the new service's flows on s1")
        assert any(f"tp_dst={NEW_PORT} actions=output:3,output:5" in line for line in service_flows(lab, "web"))
        status, body = lab.rest("GET", "/ftcp/services/web")
        assert status == 200 and body["port"] == NEW_PORT

        # The backup's agent logs the new service at once (the controller tells it)...
        def logged(res):
            status, body = lab.rest("GET", "/ftcp/connections?service=web")
            return status == 200 and any(c["client_port"] == res["local_port"] and c["status"] == "protected"
                                         and c["c2s_logged"] == res["sent"] for c in body["connections"])
        res = lab.client("c2", "reqresp", PRIMARY_IP, NEW_PORT, "--count", 20)
        assert res["ok"], res
        wait_for(lambda: logged(res), 10, "the new service's connection in the agent's log")
        # ...and so does an agent started later: it reads the services the controller recorded.
        assert lab.stop_agent() == 0
        lab.start_agent()
        agents = wait_for(lambda: (lambda r: r[1]["agents"] if r[0] == 200 else None)(lab.rest("GET", "/ftcp/health")),
                          10, "health")
        assert [a["status"] for a in agents if a["name"] == "b1"] == ["up"], agents   # not "stopped" as it was
        res = lab.client("c2", "reqresp", PRIMARY_IP, NEW_PORT, "--count", 20)
        assert res["ok"], res
        wait_for(lambda: logged(res), 10, "the new service's connection logged by the restarted agent")

        # A live connection's full TCP state.
        client = RunningClient(lab.host("c1"), "stream", PRIMARY_IP, PORT, "--bytes", 60_000_000, "--progress", 0.02)
        client.wait_progress(received=2_000_000)
        cid = f"10.0.0.1:{_local_port(lab)}-{PRIMARY_IP}:{PORT}"
        status, conn = wait_for(lambda: (lambda r: r if r[0] == 200 else None)(lab.rest("GET", f"/ftcp/connections/{cid}")),
                                10, "the connection over REST")
        assert conn["status"] == "protected" and conn["state"] == "established", conn
        assert conn["isn_c"] is not None and conn["s2c_acked"] > 0

        # Planned migration while the client streams: nothing lost, nothing doubled.
        status, body = lab.rest("POST", "/ftcp/services/demo/migrate", token=False)
        assert status in (401, 403), body
        status, body = lab.rest("POST", "/ftcp/services/demo/migrate")
        assert status == 200 and body["backup"] == "b1", body
        res = client.result()
        assert res["ok"] and res["received"] == 60_000_000, (res.get("error"), res, lab.logs())
        svc = wait_for(lambda: (lambda r: r[1] if r[1].get("status") == "failed-over" else None)(
            lab.rest("GET", "/ftcp/services/demo")), 10, "the migration to be recorded")
        assert svc["epoch"] == 1
        assert lab.rest("POST", "/ftcp/services/demo/migrate")[0] == 409

        # Delete the new service: its flows are gone.
        status, _ = lab.rest("DELETE", "/ftcp/services/web")
        assert status == 204
        wait_for(lambda: service_flows(lab, "web") == [], 10, "the deleted service's flows to go")
        assert lab.rest("GET", "/ftcp/services/web")[0] == 404


def _local_port(lab):
    out = lab.host("c1").cmd(f"ss -tnH state established '( dport = :{PORT} )'")
    return int(out.split()[2].rsplit(":", 1)[1])
