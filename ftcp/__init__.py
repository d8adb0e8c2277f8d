"""ftcp: transparent TCP failover from an OpenFlow controller.

The core is importable without Ryu; only ftcp.controller.of.flows builds OpenFlow messages.
Keep this file free of imports: the venv's .pth hook imports ryu_apps.eventlet_compat
at every interpreter start.
"""
