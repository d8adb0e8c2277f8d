"""The lab's held clients on c1, driven over stdin: tests/support/multi_client.py phase
by phase (HeldClient), one scenario of tests/support/scripted_client.py
(ScriptedClient), and the Redis id of one of their connections."""
import json
import subprocess

from topology.lab import PRIMARY_IP, ROOT

PORT = 7000
CLIENT = str(ROOT / "tests/support/multi_client.py")
SCRIPTED = str(ROOT / "tests/support/scripted_client.py")


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


class ScriptedClient:
    """``scripted_client.py SCENARIO PRIMARY_IP PORT ARGS...`` on c1 (the scenarios and
    what they print are in its docstring); its stderr goes to the test's."""

    def __init__(self, lab, scenario, *args):
        self.proc = lab.host("c1").popen(["python3", SCRIPTED, scenario, PRIMARY_IP, str(PORT), *map(str, args)],
                                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def line(self) -> str:
        """The next line it prints, stripped ("" once it has ended)."""
        return self.proc.stdout.readline().strip()

    def go(self) -> str:
        """Send it one stdin line (the next step) and return the line it prints for it."""
        self.proc.stdin.write("next\n")
        self.proc.stdin.flush()
        return self.line()

    def kill(self):
        self.proc.kill()
