"""ftcp: transparent TCP failover from an OpenFlow controller.

The core is importable without Ryu; only ftcp.flows builds OpenFlow messages.
Keep this file free of imports: the venv's .pth hook imports ftcp.eventlet_compat
at every interpreter start.
"""
