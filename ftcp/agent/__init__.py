"""Backup agent: capture-side parsing and TCP tracking, Redis writer, takeover."""
