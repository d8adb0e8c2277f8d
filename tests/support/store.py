"""The real Store over fakeredis, for unit tests that need Redis without a server."""
import fakeredis

from ftcp.common.store import Store


def fake_store(url: str = "redis://:pa55word@redis.example:6379/0", server=None) -> Store:
    """The real Store over an in-memory fake Redis. ``store.server.connected = False``
    takes Redis away (every call raises StoreError); ``store.fake_redis`` is a client
    of the same fake server (text replies) for a test to look at or change Redis
    directly; ``server``: another fake store's, to share its Redis. The URL is never
    dialled (redis-py connects lazily, and the clients are replaced: the one place the
    tests reach into the Store's private parts)."""
    store = Store(url)
    server = server or fakeredis.FakeServer()
    store._redis = fakeredis.FakeRedis(server=server, decode_responses=True)
    store._raw = fakeredis.FakeRedis(server=server)
    store.server = server
    store.fake_redis = fakeredis.FakeRedis(server=server, decode_responses=True)
    return store
