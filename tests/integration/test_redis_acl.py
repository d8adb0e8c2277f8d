"""Each component has a Redis user of its own, with only the rights it needs
(ftcp/common/store.py acl_rules), on the lab's real redis-server: an agent writes its
connections, heartbeat and events and talks on its channels, but cannot rewrite a
service's record, take the controller's lease, talk on another agent's channel or run
admin commands. The whole lab runs with these users (topology/lab.py)."""
import shutil
from pathlib import Path

import pytest
import redis

from ftcp.agent.writer import ConnWrite
from ftcp.common.config import parse
from ftcp.common.errors import StoreError
from ftcp.common.keys import agent_channel
from ftcp.common.store import Store
from topology.processes import RedisServer

RUN = Path("/run/ftcp-acl-test")
SERVICE = parse({"services": [{
    "name": "web", "address": "10.0.0.10", "port": 80, "primary": {"port": 3, "mac": "00:00:00:00:00:10"},
    "backups": [{"name": "b1", "address": "10.0.0.20", "data_port": 4, "mirror_port": 5,
                 "mac": "00:00:00:00:00:20"}]}]}).services[0]


@pytest.fixture(scope="module")
def server():
    shutil.rmtree(RUN, ignore_errors=True)
    RUN.mkdir(parents=True)
    redis_server = RedisServer(RUN)
    try:
        redis_server.wait_ready()
        yield redis_server
    finally:
        redis_server.stop()
        shutil.rmtree(RUN, ignore_errors=True)


def refused(call) -> str:
    with pytest.raises(StoreError) as e:
        call()
    return str(e.value)


def test_the_agent_does_its_work_and_no_more(server):
    controller, agent = Store(server.url_for("controller")), Store(server.url_for("agent:b1"))
    controller.save_service(SERVICE, "protected")
    conn = "10.0.0.1:40000-10.0.0.10:80"
    agent.write_conns([ConnWrite(conn, "web", {"status": "protected", "c2s_logged": 3}, b"abc", True, False)],
                      agent={"heartbeat": "1.0"}, agent_name="b1",
                      events=[{"kind": "conn_unprotected", "conn": conn}])
    assert agent.conn_log("b1", conn) == b"abc" and agent.service("web")["status"] == "protected"
    assert agent.agent("b1")["heartbeat"] == "1.0"
    agent.answer("b1", {"cmd": "gone", "backup": "b1"})
    assert [m["cmd"] for _, m in controller.read_answers({"b1": "0-0"}, block_ms=None)] == ["gone"]
    for call in (lambda: agent.save_service(SERVICE, "unprotected"),      # a service's record
                 lambda: agent.lead("b1", 10),                            # the controller's lease
                 lambda: agent.publish(agent_channel("b2"), {"cmd": "takeover"}),
                 lambda: agent.answer("b2", {"cmd": "gone", "backup": "b2"}),   # another agent's answers
                 lambda: agent.publish("ftcp:ctl:controller", {"cmd": "gone"}),
                 lambda: agent.write_conns([], agent={"heartbeat": "2"}, agent_name="b2"),
                 # another agent's namespace: its connection records, logs and sets
                 lambda: agent.write_conns([ConnWrite(conn, "web", {"status": "protected"}, b"x", True, False)],
                                           agent_name="b2"),
                 lambda: agent.delete_conn("b2", conn, "web")):
        assert "no permissions" in refused(call)
    assert controller.service("web")["status"] == "protected" and controller.leader() is None
    as_agent = redis.Redis.from_url(server.url_for("agent:b1"))
    for command in (("FLUSHALL",), ("CONFIG", "GET", "requirepass"), ("KEYS", "*"), ("SET", "other:key", "1"),
                    ("SETRANGE", f"ftcp:conn:b1:{conn}", 1 << 20, "x"),   # an unbounded string
                    ("HSET", f"ftcp:conn:b2:{conn}", "status", "x"), ("RPUSH", f"ftcp:conn:b2:{conn}:c2s", "x"),
                    ("SADD", "ftcp:svc:web:conns:b2", conn),
                    ("DEL", "ftcp:events"), ("XTRIM", "ftcp:events", "MAXLEN", 0), ("HSET", "ftcp:events", "a", 1),
                    ("DEL", "ftcp:agent:b1"), ("HSET", "ftcp:svc:web", "status", "x"), ("SCAN", 0),
                    ("EVAL", "return 1", 0), ("CLIENT", "KILL", "TYPE", "pubsub"), ("INFO",), ("ROLE",)):
        with pytest.raises(redis.exceptions.NoPermissionError):
            as_agent.execute_command(*command)


def test_the_controller_keeps_to_the_prefix(server):
    controller = Store(server.url_for("controller"))
    assert controller.lead("host:1", 10)[1] is True
    controller.publish(agent_channel("b1"), {"cmd": "takeover"})
    as_controller = redis.Redis.from_url(server.url_for("controller"))
    for command in (("FLUSHALL",), ("CONFIG", "SET", "requirepass", "x"), ("GET", "other:key")):
        with pytest.raises(redis.exceptions.NoPermissionError):
            as_controller.execute_command(*command)


def test_no_password_no_access(server):
    right = server.url_for("agent:b1")
    assert Store(right).ping()
    url = right.replace(server.users["agent:b1"], "wrong")
    assert url != right     # the same user and socket: only the password differs
    with pytest.raises(StoreError) as e:
        Store(url).ping()
    # Redis's WRONGPASS (redis-py drops the code and raises AuthenticationError): the
    # server refused the password, not a URL or a socket the client got wrong
    assert isinstance(e.value.__context__, redis.exceptions.AuthenticationError), repr(e.value.__context__)
    assert str(e.value).endswith(": invalid username-password pair or user is disabled."), str(e.value)
