"""A Ryu app that serves the real REST shim and Api over the real Store, with an
in-memory controller adapter instead of OpenFlow: the REST API end to end through the
stock ryu-manager, without a switch.

    FTCP_CONFIG=services.yaml ryu-manager --wsapi-port N --ofp-tcp-listen-port M tests/integration/rest_app.py
"""
from ryu.app.wsgi import WSGIApplication
from ryu.base import app_manager
from ryu.lib import hub

from ftcp import config as ftcp_config
from ftcp.api import Api, Controller
from ftcp.store import Store
from ryu_apps import ftcp_rest
from ryu_apps.ftcp_app import _load_config


class MemoryController(Controller):
    """Services in memory and in Redis; nothing to install with no switch."""

    def __init__(self, conf, store):
        self.conf, self.store = conf, store
        for service in conf.services:
            store.save_service(service, "configured")

    def config(self):
        return self.conf

    def apply_service(self, service):
        conf = ftcp_config.with_service(self.conf, service)
        self.store.save_service(service, "configured")
        self.conf = conf

    def remove_service(self, name):
        self.store.delete_service(name)
        self.conf = ftcp_config.without_service(self.conf, name)

    def switches(self):
        return []


class RestTestApp(app_manager.RyuApp):
    _CONTEXTS = {"wsgi": WSGIApplication}

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        conf = _load_config()
        store = Store(conf.redis_url, pause=lambda: hub.sleep(0))   # as ryu_apps/ftcp_app.py
        ftcp_rest.register(kwargs["wsgi"], Api(store, MemoryController(conf, store), ftcp_rest.api_token()))
