"""The error every Redis failure becomes (pure: importing it loads no Redis client)."""


class StoreError(RuntimeError):
    """Redis could not be reached or answered with an error."""
