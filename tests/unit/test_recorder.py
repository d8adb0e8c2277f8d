"""The Redis buffer keeps records across an outage and writes them when Redis returns,
through the real Store (over fakeredis: it merges a service's hash as Redis does)."""
from ftcp.common import config
from ftcp.controller.recorder import Recorder
from tests.support.store import fake_store

SVC = config.parse({"services": [{"name": "web", "address": "10.0.0.10", "port": 80,
                                  "primary": {"port": 3, "mac": "00:00:00:00:00:10"},
                                  "backups": [{"name": "b1", "address": "10.0.0.20", "data_port": 4,
                                               "mirror_port": 5, "mac": "00:00:00:00:00:20"}]}]}).services[0]
# What Store.save_service writes of every record, whatever the status and fields.
OWN_FIELDS = {"svc_ip", "svc_port", "primary", "backups", "status", "updated", "config", "epoch"}


def kinds(store):
    return [record["kind"] for _, record in store.events()]


def extra(record):
    """A service record's status and the fields the recorder was given."""
    return record["status"], {k: v for k, v in record.items() if k not in OWN_FIELDS}


def redis_down(store, down=True):
    store.server.connected = not down


def test_flush_writes_in_order_and_empties():
    store = fake_store()
    rec = Recorder(store)
    rec.service(SVC, "configured")
    rec.event("a", x=1)
    rec.event("b")
    assert rec.flush() and rec.pending == 0
    assert store.service_names() == {"web"} and extra(store.service("web")) == ("configured", {})
    assert kinds(store) == ["a", "b"]
    assert store.events()[0][1]["x"] == "1"


def test_outage_keeps_latest_status_and_events_then_recovers():
    store = fake_store()
    redis_down(store)
    rec = Recorder(store)
    rec.service(SVC, "configured")
    rec.event("one")
    assert not rec.flush() and rec.redis_errors == 1
    rec.service(SVC, "protected", flows=3)  # latest wins
    rec.event("two")
    assert rec.pending == 3
    redis_down(store, False)
    assert rec.flush()
    assert extra(store.service("web")) == ("protected", {"flows": "3"})
    assert kinds(store) == ["one", "two"]


def test_event_bound_counts_what_it_drops():
    store = fake_store()
    redis_down(store)
    rec = Recorder(store, max_events=2)
    for i in range(5):
        rec.event(f"e{i}")
    assert rec.dropped_events == 3
    redis_down(store, False)
    rec.flush()
    assert kinds(store) == ["e3", "e4"]


def test_status_recorded_during_a_write_is_not_lost():
    """Redis I/O yields to other green threads; a newer status set meanwhile survives."""
    store = fake_store()
    rec = Recorder(store)
    save = store.save_service

    def save_then_record(service, status, **fields):
        save(service, status, **fields)
        if status == "configured":
            rec.service(SVC, "protected")  # what the barrier handler does mid-flush
    store.save_service = save_then_record
    rec.service(SVC, "configured")
    rec.flush()
    assert rec.pending == 1
    rec.flush()
    assert extra(store.service("web")) == ("protected", {})


def test_forget_service_wins_over_a_pending_status_and_survives_an_outage():
    store = fake_store()
    rec = Recorder(store)
    rec.service(SVC, "protected")
    assert rec.flush() and store.service("web")
    rec.service(SVC, "configured")
    rec.forget_service("web")
    redis_down(store)
    assert not rec.flush() and rec.pending == 1
    redis_down(store, False)
    assert rec.flush()
    assert store.service("web") is None and store.service_names() == set()


def test_fields_of_a_record_still_waiting_are_kept_by_a_newer_one():
    store = fake_store()
    rec = Recorder(store)
    rec.service(SVC, "failed-over", taken=3, step="redirecting")
    rec.service(SVC, "failed-over", step="done")
    assert rec.flush()
    assert extra(store.service("web")) == ("failed-over", {"taken": "3", "step": "done"})


def test_fields_of_a_record_whose_write_failed_are_kept_by_one_recorded_meanwhile():
    """A write that fails (Redis away: it yields for its timeout) while a newer status
    is recorded: the newer one goes to Redis with the failed one's other fields, as if
    both had been written in turn."""
    store = fake_store()
    rec = Recorder(store)
    save = store.save_service

    def record_then_fail(service, status, **fields):
        if fields.get("step") == "redirecting":
            rec.service(SVC, "failed-over", step="done")
            redis_down(store)
        save(service, status, **fields)
    store.save_service = record_then_fail
    rec.service(SVC, "failed-over", taken=3, step="redirecting")
    assert not rec.flush() and rec.pending == 1
    redis_down(store, False)
    assert rec.flush()
    assert extra(store.service("web")) == ("failed-over", {"taken": "3", "step": "done"})


def test_a_service_forgotten_and_recorded_again_before_a_flush_starts_afresh():
    """Removed and created again while Redis is away: the new service's record holds
    only its own fields, not the removed one's (the delete is not lost)."""
    store = fake_store()
    rec = Recorder(store)
    rec.service(SVC, "failed-over", taken=3, step="done")
    assert rec.flush()
    redis_down(store)
    rec.forget_service("web")
    rec.service(SVC, "configured")
    assert not rec.flush()
    redis_down(store, False)
    assert rec.flush()
    assert extra(store.service("web")) == ("configured", {})


def test_a_service_forgotten_and_recorded_again_during_a_failed_write_starts_afresh():
    store = fake_store()
    rec = Recorder(store)
    rec.service(SVC, "failed-over", taken=3)
    assert rec.flush()
    save = store.save_service

    def remove_recreate_then_fail(service, status, **fields):
        if status == "failed-over":
            rec.forget_service("web")
            rec.service(SVC, "configured")
            redis_down(store)
        save(service, status, **fields)
    store.save_service = remove_recreate_then_fail
    rec.service(SVC, "failed-over", step="done")
    assert not rec.flush()
    redis_down(store, False)
    assert rec.flush()
    assert extra(store.service("web")) == ("configured", {})
