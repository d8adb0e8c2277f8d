"""Ryu WSGI shim of the ftcp REST API: HTTP in, ftcp.api.routes.Api out (docs/rest.md, docs/openapi.yaml).

The main app declares ``_CONTEXTS = {"wsgi": WSGIApplication}``, builds an
``ftcp.api.routes.Api`` and calls ``register(kwargs["wsgi"], api)``. Every path of
``ftcp.api.routes.ROUTES`` is served here under its route name; validation, auth and
error codes are all in ftcp/api/routes.py. No exception
leaves this module for Ryu: it is logged and answered 500 with a JSON body.
"""
import json
import logging
import os

from ryu import cfg
from ryu.app.wsgi import ControllerBase, Response, route

from ftcp.api.routes import JSON, ROUTES, TOKEN_HELP, Api
from ftcp.api.validation import MAX_BODY, Request

LOG = logging.getLogger(__name__)
API_KEY = "ftcp_api"
DEFAULT_HOST = "127.0.0.1"

cfg.CONF.register_opts([
    # secret: oslo.config masks it when it logs the configuration.
    cfg.StrOpt("api_token", default="", secret=True,
               help="bearer token for state-changing REST calls (FTCP_API_TOKEN overrides it); "
                    "empty: those calls are refused"),
], group="ftcp")


def api_token() -> str:
    """The REST token: FTCP_API_TOKEN, else ``[ftcp] api_token`` of ryu.conf."""
    return os.environ.get("FTCP_API_TOKEN") or cfg.CONF.ftcp.api_token


def register(wsgi_app, api: Api) -> None:
    """Serve ``api`` under /ftcp and /metrics on Ryu's WSGI server."""
    # Ryu's own default is 0.0.0.0; ftcp listens on localhost unless --wsapi-host or
    # ryu.conf says otherwise (an explicit setting always wins over a default).
    cfg.CONF.set_default("wsapi_host", DEFAULT_HOST)
    wsgi_app.register(FtcpRestController, {API_KEY: api})
    # Registered second: Routes tries routes in order, so this only gets what no
    # real resource matched, and answers JSON instead of Ryu's HTML 404.
    wsgi_app.register(FtcpNotFoundController, {API_KEY: api})
    LOG.info("ftcp REST API on http://%s:%s/ftcp", cfg.CONF.wsapi_host, cfg.CONF.wsapi_port)
    if not api.mutations_enabled:
        LOG.warning("ftcp REST: no API token configured, so state-changing calls are refused; %s", TOKEN_HELP)


def _response(status: int, body, content_type: str = JSON, headers=()) -> Response:
    resp = Response(status=status)
    if status == 204:
        resp.headers.pop("Content-Type", None)   # no content, so no content type
    else:
        resp.body = body.encode() if isinstance(body, str) else json.dumps(body).encode()
        resp.headers["Content-Type"] = content_type
    for name, value in headers:
        resp.headers[name] = value
    return resp


class _Base(ControllerBase):
    def __init__(self, req, link, data, **config):
        super().__init__(req, link, data, **config)
        self.api = data[API_KEY]

    def _call(self, route_name: str, req, **params):
        try:
            try:
                query = {name: req.GET.getall(name) for name in req.GET.keys()}
            except UnicodeDecodeError:
                return _response(400, {"error": "the query string is not valid UTF-8", "field": "query"})
            length = req.content_length or 0
            # Read at most one byte past the limit: the Api answers 413 for that.
            body = req.body_file.read(MAX_BODY + 1) if length or req.is_body_readable else b""
            # WSGI hands the path over as latin-1 (PEP 3333); the URL was UTF-8.
            params = {k: v.encode("latin-1").decode("utf-8", "replace") for k, v in params.items()}
            request = Request(method=req.method, params=params, query=query, body=body,
                              authorization=req.headers.get("Authorization"))
            status, out, content_type = self.api.handle(route_name, request)
            headers = []
            if status == 401:
                headers.append(("WWW-Authenticate", 'Bearer realm="ftcp"'))
            elif status == 405:
                headers.append(("Allow", ", ".join(self.api.methods(route_name))))
            return _response(status, out, content_type, headers)
        except Exception:
            LOG.exception("ftcp REST: %s %s failed", req.method, req.path_info)
            return _response(500, {"error": "internal error; the controller log has the details", "field": None})


def _resource(route_name: str):
    def handle(self, req, **params):
        return self._call(route_name, req, **params)
    handle.__name__ = route_name
    return handle


# One handler per resource of ftcp.api.routes.ROUTES, at its path. Routes take every
# method (no ``methods=``) so that the Api answers a wrong one with 405 and an Allow
# header, not Ryu with an HTML 404.
FtcpRestController = type("FtcpRestController", (_Base,), {
    name: route(f"ftcp_{name}", path)(_resource(name)) for name, (path, _) in ROUTES.items()})


class FtcpNotFoundController(_Base):
    @route("ftcp_root", "/ftcp")
    def root(self, req, **params):
        return self._call("", req)

    @route("ftcp_unknown", "/ftcp/{tail:.*}")
    def unknown(self, req, **params):
        return self._call("", req)
