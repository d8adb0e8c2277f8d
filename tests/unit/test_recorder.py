"""The Redis buffer keeps records across an outage and writes them when Redis returns."""
from ftcp import config
from ftcp.recorder import Recorder
from ftcp.store import StoreError

SVC = config.parse({"services": [{"name": "web", "address": "10.0.0.10", "port": 80, "primary": {"port": 3, "mac": "00:00:00:00:00:10"},
                                  "backups": [{"name": "b1", "address": "10.0.0.20", "data_port": 4,
                                               "mirror_port": 5, "mac": "00:00:00:00:00:20"}]}]}).services[0]


class FakeStore:
    def __init__(self):
        self.up = True
        self.services, self.events = {}, []

    def save_service(self, service, status, **extra):
        if not self.up:
            raise StoreError("down")
        self.services[service.name] = (status, extra)

    def event(self, kind, **fields):
        if not self.up:
            raise StoreError("down")
        self.events.append((kind, fields))

    def delete_service(self, name):
        if not self.up:
            raise StoreError("down")
        self.services.pop(name, None)


def test_flush_writes_in_order_and_empties():
    store = FakeStore()
    rec = Recorder(store)
    rec.service(SVC, "configured")
    rec.event("a", x=1)
    rec.event("b")
    assert rec.flush() and rec.pending == 0
    assert store.services == {"web": ("configured", {})}
    assert [k for k, _ in store.events] == ["a", "b"]


def test_outage_keeps_latest_status_and_events_then_recovers():
    store = FakeStore()
    store.up = False
    rec = Recorder(store)
    rec.service(SVC, "configured")
    rec.event("one")
    assert not rec.flush() and rec.redis_errors == 1
    rec.service(SVC, "protected", flows=3)  # latest wins
    rec.event("two")
    assert rec.pending == 3
    store.up = True
    assert rec.flush()
    assert store.services["web"] == ("protected", {"flows": 3})
    assert [k for k, _ in store.events] == ["one", "two"]


def test_event_bound_counts_what_it_drops():
    store = FakeStore()
    store.up = False
    rec = Recorder(store, max_events=2)
    for i in range(5):
        rec.event(f"e{i}")
    assert rec.dropped_events == 3
    store.up = True
    rec.flush()
    assert [k for k, _ in store.events] == ["e3", "e4"]


def test_status_recorded_during_a_write_is_not_lost():
    """Redis I/O yields to other green threads; a newer status set meanwhile survives."""
    rec = None

    class YieldingStore(FakeStore):
        def save_service(self, service, status, **extra):
            super().save_service(service, status, **extra)
            if status == "configured":
                rec.service(SVC, "protected")  # what the barrier handler does mid-flush
    store = YieldingStore()
    rec = Recorder(store)
    rec.service(SVC, "configured")
    rec.flush()
    assert rec.pending == 1
    rec.flush()
    assert store.services["web"] == ("protected", {})


def test_forget_service_wins_over_a_pending_status_and_survives_an_outage():
    store = FakeStore()
    rec = Recorder(store)
    rec.service(SVC, "protected")
    assert rec.flush() and "web" in store.services
    rec.service(SVC, "configured")
    rec.forget_service("web")
    store.up = False
    assert not rec.flush() and rec.pending == 1
    store.up = True
    assert rec.flush() and store.services == {}


def test_fields_of_a_record_still_waiting_are_kept_by_a_newer_one():
    store = FakeStore()
    rec = Recorder(store)
    rec.service(SVC, "failed-over", taken=3, step="redirecting")
    rec.service(SVC, "failed-over", step="done")
    assert rec.flush()
    assert store.services["web"] == ("failed-over", {"taken": 3, "step": "done"})
