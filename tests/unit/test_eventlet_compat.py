"""The venv's ryu-manager must import ryu's WSGI module on current eventlet."""
import subprocess
import sys


def test_ryu_wsgi_imports_with_current_eventlet():
    code = ("import eventlet, ryu.app.wsgi, eventlet.wsgi; "
            "assert eventlet.wsgi.ALREADY_HANDLED is ryu.app.wsgi._AlreadyHandledResponse._ALREADY_HANDLED; "
            "print(eventlet.__version__)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    major, minor = map(int, out.stdout.split(".")[:2])
    assert (major, minor) > (0, 30)  # really the current eventlet, not the old one


def test_shim_leaves_other_modules_alone():
    from ryu_apps import eventlet_compat
    finder = eventlet_compat._Finder()
    assert finder.find_spec("json", None) is None
