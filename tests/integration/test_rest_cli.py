"""bin/ftcp (ftcp/api/client.py) against the live REST API of the real controller (rest_server.py)."""
import json
import os
import subprocess
import time

import yaml

from ftcp.common.store import Store
from tests.integration.rest_server import TOKEN, no_ovs  # noqa: F401 (fixture)
from tests.support.fake_agent import SERVICE, FakeAgent, conn_id, heartbeat
from topology.lab import ROOT, free_tcp_port


def ftcp(rest, *args, token=None, stdin=None):
    env = {k: v for k, v in os.environ.items() if not k.startswith("FTCP_")}
    if token is not None:
        env["FTCP_API_TOKEN"] = token
    run = subprocess.run([str(ROOT / "bin/ftcp"), "--url", rest.url, *args], capture_output=True, text=True,
                         env=env, input=stdin, timeout=60)
    assert TOKEN not in run.stdout + run.stderr
    return run


def lines_with(text, *words):
    return [line for line in text.splitlines() if all(w in line for w in words)]


def test_queries_print_tables_and_json(rest):
    now = time.time()
    agent = FakeAgent(Store(rest.redis.url))
    agent.connect("10.0.2.1", 60000, b"abcdef", now=now)
    agent.connect("10.0.2.2", 60001, b"x", now=now, with_syn=False)
    agent.flush(now, heartbeat(now))
    Store(rest.redis.url).event("flows_installed", service="web", dpid="0000000000000001", flows=3)

    out = ftcp(rest, "services").stdout
    assert out.splitlines()[0].split() == ["NAME", "ADDRESS", "STATUS", "PRIMARY", "BACKUPS", "CONNS(P/U)", "EPOCH",
                                           "REASON"]
    assert lines_with(out, "web", "10.0.0.10:7000", "configured", "b1")

    out = ftcp(rest, "service", "web").stdout
    assert lines_with(out, "address:", "10.0.0.10:7000") and lines_with(out, "b1", "10.0.0.20")

    out = ftcp(rest, "conns", "--status", "unprotected", "--client", "10.0.2.2").stdout
    assert lines_with(out, conn_id("10.0.2.2", 60001), "unprotected", "no SYN seen")
    assert out.rstrip().endswith("(1-1 of 1)")

    out = ftcp(rest, "conn", conn_id("10.0.2.1", 60000)).stdout
    assert lines_with(out, "log_bytes:", "6") and not lines_with(out, "isn_c:")   # sequence numbers: token only
    out = ftcp(rest, "conn", conn_id("10.0.2.1", 60000), token=TOKEN).stdout
    assert lines_with(out, "isn_c:", "1000")

    out = ftcp(rest, "health").stdout
    assert lines_with(out, "redis:", "up") and lines_with(out, "b1", "up")

    out = ftcp(rest, "events", "--limit", "5").stdout
    assert lines_with(out, "flows_installed", "service=web", "flows=3")

    raw = json.loads(ftcp(rest, "--json", "service", "web").stdout)
    assert raw == rest.request("GET", "/ftcp/services/web")[2]


def unnamed(**changes):
    body = dict(SERVICE, **changes)
    del body["name"]
    return json.dumps(body)


def test_put_and_delete_a_service_with_the_token(rest, tmp_path):
    spec = tmp_path / "db.yaml"
    spec.write_text(yaml.safe_dump(dict(SERVICE, name="cli-db", address="10.0.0.12", port=6379)))
    refused = ftcp(rest, "put-service", str(spec))
    assert refused.returncode == 1 and "HTTP 401" in refused.stderr and "Authorization" in refused.stderr

    created = ftcp(rest, "put-service", str(spec), token=TOKEN)
    assert created.returncode == 0, created.stderr
    assert lines_with(created.stdout, "address:", "10.0.0.12:6379")

    from_stdin = ftcp(rest, "put-service", "-", "--name", "cli-db", token=TOKEN,
                      stdin=unnamed(address="10.0.0.12", port=6380))
    assert from_stdin.returncode == 0 and lines_with(from_stdin.stdout, "10.0.0.12:6380")

    bad = ftcp(rest, "put-service", "-", "--name", "cli-db", token=TOKEN,
               stdin=unnamed(address="10.0.0.12", port=0))
    assert bad.returncode == 1 and "HTTP 400: service.port:" in bad.stderr

    assert ftcp(rest, "delete-service", "cli-db", token=TOKEN).stdout.strip() == "done"
    gone = ftcp(rest, "service", "cli-db")
    assert gone.returncode == 1 and "HTTP 404" in gone.stderr and "cli-db" in gone.stderr


def test_unreachable_api_is_exit_3(rest):
    run = subprocess.run([str(ROOT / "bin/ftcp"), "--url", f"http://127.0.0.1:{free_tcp_port()}", "health"],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 3 and "cannot reach the API" in run.stderr
