"""The REST API of the real ryu-manager in the lab: create a service and see its flows
on the switch, read a live connection's state, migrate a streaming connection to the
backup with byte-exact continuity, delete the service and see its flows gone."""
import re

from ftcp.controller.of import cookies
from ftcp.common.config import service_cookie_id
from topology.clients import RunningClient
from topology.lab import PRIMARY_IP, SERVICES, Lab, wait_for

PORT, NEW_PORT = 7000, 7002


# What a protected service with one backup gets when the config has probes
# (ftcp/controller/of/messages.py service_flows): both mirrors, the mirror port's drop, the drops of the
# service's own ports as clients (primary, backup), the FIN/RST hold and the probe
# answers. The ARP for the probe address is one flow per primary port, shared by its
# services (service id 0), so not among them.
PROTECTED_FLOWS = sorted([cookies.MIRROR_C2S, cookies.MIRROR_S2C, cookies.MIRROR_PORT_DROP, cookies.NOT_A_CLIENT_DROP,
                          cookies.NOT_A_CLIENT_DROP, cookies.HOLD_FIN, cookies.HOLD_RST, cookies.PROBE_REPLY])


def service_flows(lab, name):
    """The purposes of the flows on s1 whose cookie names service ``name``, sorted."""
    sid = service_cookie_id(name)
    parts = [cookies.cookie_parts(int(m.group(1), 16)) for m in re.finditer(r"cookie=(0x[0-9a-f]+)", lab.flows())]
    return sorted(purpose for service, purpose in filter(None, parts) if service == sid)


def service_flow_lines(lab, name, purpose):
    cookie = f"cookie={cookies.cookie(service_cookie_id(name), purpose):#x},"
    return [line for line in lab.flows().splitlines() if cookie in line]


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
        assert status == 201, body            # created (200 is a replacement)
        # "protected" is recorded once the switch confirmed the flows (a barrier)
        wait_for(lambda: lab.rest("GET", "/ftcp/services/web")[1]["status"] == "protected", 10,
                 "the new service to be protected")
        assert service_flows(lab, "web") == PROTECTED_FLOWS
        mirror, = service_flow_lines(lab, "web", cookies.MIRROR_C2S)
        assert f"tp_dst={NEW_PORT} actions=output:3,output:5" in mirror, mirror
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
        status, conn = wait_for(lambda: (lambda r: r if r[0] == 200 else None)(
            lab.rest("GET", f"/ftcp/connections/{cid}")),
                                10, "the connection over REST")
        assert conn["status"] == "protected" and conn["state"] == "established", conn
        assert conn["isn_c"] is not None and conn["s2c_acked"] > 0

        # Planned migration while the client streams: nothing lost, nothing doubled.
        status, body = lab.rest("POST", "/ftcp/services/demo/migrate", token=False)
        assert status == 401, body            # no token sent (403 is for a controller without one)
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
