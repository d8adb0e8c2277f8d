"""ftcp: transparent TCP failover from an OpenFlow controller.

Three deployables share ftcp/common: the controller (ftcp/controller, served over REST by
ftcp/api), the agent (ftcp/agent) and the command-line client (ftcp/api/client.py);
docs/architecture.md has the map and the import rules.
Keep this file free of imports: importing any part loads it (the command-line client
loads only the standard library).
"""
