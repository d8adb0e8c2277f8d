"""ryu_apps/ftcp_rest.py in process: Ryu's WSGI application with the shim registered,
driven with webob requests (no server, no Redis)."""
import json

import pytest
from ryu import cfg
from ryu.app.wsgi import WSGIApplication
from webob import Request as WebRequest

from ftcp.api.routes import ROUTES, Api
from ryu_apps import ftcp_rest


class RecordingApi:
    """Stands in for ftcp.api.routes.Api: records what the shim passes, answers as told."""

    mutations_enabled = True
    methods = staticmethod(Api.methods)

    def __init__(self, answer=(200, {"ok": True}, "application/json")):
        self.answer, self.calls = answer, []

    def handle(self, route, req):
        self.calls.append((route, req))
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer


def app_with(api):
    app = WSGIApplication()
    ftcp_rest.register(app, api)
    return app


def send(app, path, method="GET", body=b"", headers=None):
    req = WebRequest.blank(path, method=method, headers=headers or {})
    if body:
        req.body = body
    return req.get_response(app)


@pytest.mark.parametrize("path, route, params", [
    ("/ftcp/services", "services", {}),
    ("/ftcp/services/web.v2", "service", {"name": "web.v2"}),
    ("/ftcp/services/web/failover", "failover", {"name": "web"}),
    ("/ftcp/services/web/migrate", "migrate", {"name": "web"}),
    ("/ftcp/connections", "connections", {}),
    ("/ftcp/connections/10.0.0.1:40000-10.0.0.10:7000", "connection", {"id": "10.0.0.1:40000-10.0.0.10:7000"}),
    ("/ftcp/health", "health", {}),
    ("/ftcp/events", "events", {}),
    ("/metrics", "metrics", {}),
    ("/ftcp/services/caf%C3%A9", "service", {"name": "café"}),
    ("/ftcp", "", {}),
    ("/ftcp/no/such/thing", "", {}),
])
def test_paths_map_to_api_routes(path, route, params):
    api = RecordingApi()
    assert send(app_with(api), path).status_int == 200
    (called, req), = api.calls
    assert (called, req.params) == (route, params)
    assert route == "" or route in ROUTES


def test_request_parts_are_passed_as_sent():
    api = RecordingApi()
    send(app_with(api), "/ftcp/connections?limit=5&status=a&status=b", "PUT", b'{"x": 1}',
         {"Authorization": "Bearer tok"})
    (_, req), = api.calls
    assert req.method == "PUT" and req.body == b'{"x": 1}' and req.authorization == "Bearer tok"
    assert req.query == {"limit": ["5"], "status": ["a", "b"]}


def test_answers_become_http():
    resp = send(app_with(RecordingApi((401, {"error": "e", "field": "Authorization"}, "application/json"))),
                "/ftcp/services/web", "DELETE")
    assert resp.status_int == 401 and resp.headers["WWW-Authenticate"] == 'Bearer realm="ftcp"'
    assert json.loads(resp.body) == {"error": "e", "field": "Authorization"}
    resp = send(app_with(RecordingApi((405, {"error": "e", "field": None}, "application/json"))),
                "/ftcp/services/web", "PATCH")
    assert resp.headers["Allow"] == "DELETE, GET, PUT"
    resp = send(app_with(RecordingApi((204, "", "application/json"))), "/ftcp/services/web", "DELETE")
    assert resp.status_int == 204 and resp.body == b"" and "Content-Type" not in resp.headers
    resp = send(app_with(RecordingApi((200, "a 1\n", "text/plain; version=0.0.4; charset=utf-8"))), "/metrics")
    assert resp.body == b"a 1\n" and resp.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"


def test_no_exception_reaches_ryu(caplog):
    resp = send(app_with(RecordingApi(RuntimeError("boom"))), "/ftcp/services")
    assert resp.status_int == 500 and resp.content_type == "application/json"
    assert json.loads(resp.body)["field"] is None
    assert "boom" in caplog.text


def test_bad_utf8_query_is_400():
    api = RecordingApi()
    resp = send(app_with(api), "/ftcp/connections?client=%ff")
    assert resp.status_int == 400 and json.loads(resp.body)["field"] == "query" and api.calls == []


def test_body_is_read_up_to_one_byte_past_the_limit():
    api = RecordingApi()
    send(app_with(api), "/ftcp/services/web", "PUT", b"x" * 200_000)
    assert len(api.calls[0][1].body) == ftcp_rest.MAX_BODY + 1


def test_localhost_by_default_and_the_token_from_env_or_conf(monkeypatch, caplog):
    api = RecordingApi()
    api.mutations_enabled = False
    app_with(api)
    assert cfg.CONF.wsapi_host == "127.0.0.1"
    assert "[ftcp] api_token" in caplog.text
    monkeypatch.setenv("FTCP_API_TOKEN", "from-env")
    assert ftcp_rest.api_token() == "from-env"
    monkeypatch.delenv("FTCP_API_TOKEN")
    cfg.CONF.set_override("api_token", "from-conf", group="ftcp")
    try:
        assert ftcp_rest.api_token() == "from-conf"
    finally:
        cfg.CONF.clear_override("api_token", group="ftcp")
