"""Stand-ins for the agent's own parts, for the unit tests of the parts that use them."""


class FakeConn:
    """A tracker connection (ftcp.agent.conn.Conn) as the writer and the hot
    standby see it; hashed by identity, like the real one. ``pending`` holds the client
    bytes the next ``take_c2s`` hands out."""

    state = "established"

    def __init__(self, cid, service="svc"):
        self.id, self.service = cid, service
        self.status, self.reason = "protected", ""
        self.pending = []
        self.isn_c = 1000
        self.c2s_logged = 0
        self.s2c_acked = 0
        self.s2c_sent = 0
        self.fin_c = False
        self.divergent = 0
        self.replica = ""

    def take_c2s(self):
        data, self.pending = b"".join(self.pending), []
        return data

    def to_state(self):
        return {"id": self.id, "state": self.state, "status": self.status, "reason": self.reason, "last_seen": 1.0,
                "opts": {"mss": 1460}, "ts_ok": True, "closed_at": None}
