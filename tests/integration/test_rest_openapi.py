"""The live REST API against docs/openapi.yaml, with schemathesis.

The stock ryu-manager runs the real controller app over a real redis-server, with no
switch (see rest_server.py); schemathesis runs all its phases (examples, coverage -- boundary and
malformed values --, fuzzing in positive and negative mode, stateful sequences such as
PUT -> GET -> DELETE -> GET) and every check but positive_data_acceptance
(tests/integration/schemathesis.toml says why). Then the controller must still answer,
and its log must hold no traceback and no token.
"""
import os
import subprocess
import time

from ftcp.common.store import Store
from tests.integration.rest_server import TOKEN, no_ovs  # noqa: F401 (fixture)
from tests.support.fake_agent import FakeAgent, heartbeat
from topology.processes import ROOT, VENV_BIN

# Fixed, so a CI failure reproduces; FTCP_SCHEMATHESIS_SEED explores other inputs.
SEED = os.environ.get("FTCP_SCHEMATHESIS_SEED", "20261127")
MAX_EXAMPLES = os.environ.get("FTCP_SCHEMATHESIS_EXAMPLES", "100")


def seed_records(url: str) -> None:
    """The connections, heartbeat and events that schemathesis.toml's dictionaries name."""
    store = Store(url)
    now = time.time()
    agent = FakeAgent(store)
    agent.connect("10.0.0.1", 40000, b"hello", now=now)
    agent.connect("10.0.0.2", 40001, b"late", now=now, with_syn=False)
    agent.flush(now, heartbeat(now))
    store.event("flows_installed", service="web", dpid="0000000000000001", flows=3)


def test_live_api_conforms_to_its_openapi_document(rest):
    seed_records(rest.redis.url)
    cmd = [str(VENV_BIN / "st"), "--config-file", str(ROOT / "tests/integration/schemathesis.toml"),
           "run", str(ROOT / "docs/openapi.yaml"), "--url", rest.url,
           "--header", f"Authorization: Bearer {TOKEN}", "--seed", SEED, "--max-examples", MAX_EXAMPLES,
           "--workers", "1", "--generation-database", "none", "--request-timeout", "20", "--no-color"]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=900, cwd=rest.run_dir)
    report = run.stdout[-20000:] + run.stderr[-5000:]
    assert run.returncode == 0, report
    # It really exercised the API, malformed requests included.
    assert "Tested: 11" in report and "Coverage" in report and "Fuzzing" in report, report
    assert " 0 passed" not in report, report

    assert rest.alive(), f"the controller stopped answering; log {rest.log}"
    log = rest.log.read_text(errors="replace")
    assert "Traceback" not in log, f"an exception reached a log: {rest.log}"
    assert TOKEN not in log
