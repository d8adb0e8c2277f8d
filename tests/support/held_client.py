"""tests/support/multi_client.py on c1 of the lab, driven phase by phase, and the
Redis id of one of its connections."""
import json
import subprocess

from topology.lab import PRIMARY_IP, ROOT

PORT = 7000
CLIENT = str(ROOT / "tests/support/multi_client.py")


def conn_id(local_port, port: int = PORT) -> str:
    """The id of c1's connection from ``local_port`` to the service."""
    return f"10.0.0.1:{local_port}-{PRIMARY_IP}:{port}"


class HeldClient:
    """tests/support/multi_client.py on c1, driven phase by phase."""

    def __init__(self, lab):
        self.proc = lab.host("c1").popen(["python3", CLIENT, PRIMARY_IP, str(PORT)], stdin=subprocess.PIPE,
                                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def result(self):
        line = self.proc.stdout.readline()
        assert line, f"client died: {self.proc.stderr.read()}"
        out = json.loads(line)
        assert out["errors"] == [], out["errors"]
        return out["conns"]

    def say(self, word):
        self.proc.stdin.write(word + "\n")
        self.proc.stdin.flush()
        return self.result()
