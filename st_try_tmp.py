import subprocess, sys, time
from tests.integration.rest_server import RestServer, TOKEN
from tests.rest_support import FakeAgent, heartbeat
from ftcp.store import Store
s = RestServer("st-try", token=TOKEN).start()
try:
    store = Store(s.redis.url)
    agent = FakeAgent(store)
    agent.connect("10.0.0.1", 40000, b"hello", now=time.time())
    agent.connect("10.0.0.2", 40001, b"late", now=time.time(), with_syn=False)
    agent.flush(time.time(), heartbeat(time.time()))
    t = time.time()
    cmd = [".venv/bin/st", "--config-file", "tests/integration/schemathesis.toml", "run", "docs/openapi.yaml",
           "--url", s.url, "-H", f"Authorization: Bearer {TOKEN}", "--max-examples", "100",
           "--workers", "1", "--generation-database", "none", "--no-color"] + sys.argv[1:]
    p = subprocess.run(cmd, capture_output=True, text=True)
    print(p.stdout[-12000:], p.stderr[-3000:], p.returncode, time.time() - t)
    print("alive", s.alive())
finally:
    s.stop()
log = open("/run/ftcp-rest-test/st-try/ryu-manager.log").read()
import re
print("tracebacks:", log.count("Traceback"))
i = log.find("Traceback"); print(log[i-300:i+3000] if i >= 0 else "")
