"""What a lab could leave behind on the machine, as a list of descriptions (empty
when it left nothing): its bridge, its links, its processes (Mininet's host, switch
and controller shells, ryu-manager with the app, its redis-server, the services, the
agent, clients) and the pid files and record in its run directory. Mininet's network
namespaces are unnamed (``ip netns`` does not list them): each lives as long as a
process is in it, so no such process left means no namespace left."""
import re
import subprocess
from pathlib import Path

PROCESSES = (r"mininet:(c\d+|p1|b1|s1)$|ryu_apps/ftcp_app.py|services/(echo|demo|web|clock)_server.py"
             r"|services/client.py|-m ftcp.agent")


def leftovers(run_dir) -> list:
    found = []
    if "s1" in subprocess.run(["ovs-vsctl", "list-br"], capture_output=True, text=True).stdout.split():
        found.append("bridge s1")
    links = re.findall(r"\b((?:c\d+|p1|b1|s1)-eth\d+)\b",
                       subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout)
    found += [f"link {name}" for name in links]
    ps = subprocess.run(["ps", "-ww", "-eo", "pid,args"], capture_output=True, text=True).stdout
    pattern = re.compile(PROCESSES + "|" + re.escape(str(run_dir)) + r"/redis.sock")
    found += [f"process {line.strip()}" for line in ps.splitlines() if pattern.search(line)]
    run = Path(run_dir)
    found += [f"file {path}" for path in [*run.glob("*.pid"), *run.glob("mininet.record")]]
    return found
