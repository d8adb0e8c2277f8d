"""A service removed and defined again over REST goes on from its last failover epoch
(ftcp:epochs): the backup's agent, which remembers the last failover of it, takes the
next one. Three planned migrations with the service deleted and created again between
them, each moving a live request/response connection byte-exact: with epochs that
restart at 0, the third one's takeover (epoch 1, after the agent saw 2) is dropped as
stale and the migration fails at its deadline."""
from ftcp.common.store import Store
from topology.clients import RunningClient
from topology.lab import PRIMARY_IP, SERVICES, Lab, failover_settled, wait_for

PORT = 7000
DEMO = {"address": PRIMARY_IP, "port": PORT, "primary": {"port": "s1-eth3", "mac": "00:00:00:00:00:10"},
        "backups": [{"name": "b1", "address": "10.0.0.20", "data_port": "s1-eth4", "mirror_port": "s1-eth5",
                     "mac": "00:00:00:00:00:20"}]}


def settled(lab, epoch: int) -> dict:
    store = Store(lab.redis.url)
    return wait_for(lambda: (lambda svc: svc if svc and svc.get("epoch") == str(epoch) else None)(
        failover_settled(store)), 20, f"the migration of epoch {epoch} to settle")


def test_epochs_go_on_through_a_delete_and_a_new_definition(run_dir):
    with Lab(service_cmd=SERVICES["demo"], service_port=PORT, run_dir=run_dir) as lab:
        for cycle in (1, 2, 3):
            if cycle > 1:
                assert lab.rest("DELETE", "/ftcp/services/demo")[0] == 204
                code, body = lab.rest("PUT", "/ftcp/services/demo", DEMO)
                assert code == 201, body
                wait_for(lambda: lab.rest("GET", "/ftcp/services/demo")[1]["status"] == "protected", 10,
                         "the service defined again to be protected")
            client = RunningClient(lab.host("c1"), "reqresp", PRIMARY_IP, PORT, "--count", 600,
                                   "--interval", 0.005, "--progress", 0.02)
            client.wait_progress(sent=1)
            code, body = lab.rest("POST", "/ftcp/services/demo/migrate")
            assert code == 200 and body["epoch"] == cycle, body
            svc = settled(lab, cycle)
            assert svc["status"] == "failed-over", svc
            res = client.result()
            assert res["ok"] and res["requests"] == 600, (res, lab.logs())
