"""Let the stock ryu-manager (ryu 4.34) run on current eventlet.

ryu/app/wsgi.py does ``from eventlet.wsgi import ALREADY_HANDLED`` at import time.
Later eventlet releases dropped that name ("ImportError: cannot import name
'ALREADY_HANDLED' from 'eventlet.wsgi'", a known ryu 4.34 breakage that upstream,
now unmaintained, never fixed), and eventlet 0.30.2, the last release that has it,
does not run on Python >= 3.10.
ryu only uses the sentinel for websocket responses, so any unique object works.

``install()`` is called from the venv's ``ftcp.pth`` (written by scripts/setup.sh),
so it runs before ryu-manager imports anything. It does not import eventlet itself:
it waits for the first import of ``eventlet.wsgi`` and adds the name then.
"""
import importlib.machinery
import sys
import warnings

_TARGET = "eventlet.wsgi"


class _Loader:
    def __init__(self, inner):
        self._inner = inner

    def create_module(self, spec):
        return self._inner.create_module(spec)

    def exec_module(self, module):
        self._inner.exec_module(module)
        if not hasattr(module, "ALREADY_HANDLED"):
            module.ALREADY_HANDLED = object()


class _Finder:
    """Meta-path finder that only wraps the loader of eventlet.wsgi."""

    def find_spec(self, name, path, target=None):
        if name != _TARGET:
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is not None and spec.loader is not None:
            spec.loader = _Loader(spec.loader)
        return spec


def install():
    # eventlet prints a multi-line deprecation banner on import; ryu is built on it
    # and users cannot act on the warning, so keep it out of every ryu-manager log.
    warnings.filterwarnings("ignore", message=r"\s*Eventlet is deprecated")
    if not any(isinstance(f, _Finder) for f in sys.meta_path):
        sys.meta_path.insert(0, _Finder())
