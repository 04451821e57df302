"""Version pinning's routing decisions (celery_durable/engine/pinning.py), in-process; the
real workers of two versions are in tests/test_deploy_versions.py."""

from __future__ import annotations

from types import SimpleNamespace

from celery import Celery

from celery_durable.engine.pinning import (
    consume_version_queues,
    misrouted,
    pinned,
    worker_versions,
)
from celery_durable.engine.publish import delivery_options


def make_app(pin: bool) -> Celery:
    app = Celery("pinning", broker="memory://", set_as_current=False)
    app.conf.update(durable_pin_version=pin, durable_version="v2", task_default_queue="work",
                    task_routes={"billing.*": {"queue": "billing"}})
    return app


def test_pinning_off_or_an_unversioned_run_changes_nothing() -> None:
    options = {"queue": "work", "priority": 3}
    assert pinned(make_app(False), "t", "v1", options) == options
    assert pinned(make_app(True), "t", None, options) == options


def test_a_pinned_message_goes_to_the_version_queue_of_its_routed_queue() -> None:
    app = make_app(True)
    assert pinned(app, "orders.ship", "v1", {"priority": 3}) == {"queue": "work@v1",
                                                               "priority": 3}
    assert pinned(app, "billing.charge", "v1", {}) == {"queue": "billing@v1"}  # task_routes
    assert pinned(app, "t", "v1", {"queue": "mail"})["queue"] == "mail@v1"
    # A run's stored routing of another version's queue, exchange and key: replaced.
    moved = pinned(app, "t", "v3", {"queue": "mail@v1", "exchange": "mail",
                                    "routing_key": "mail@v1", "expires": "soon"})
    assert moved == {"queue": "mail@v3", "expires": "soon"}


def test_only_a_versioned_run_of_another_version_is_handed_back() -> None:
    app = make_app(True)
    assert misrouted(app, "v1", "v2")
    assert not misrouted(app, "v2", "v2")
    assert not misrouted(app, None, "v2")  # unversioned runs are not pinned
    assert not misrouted(make_app(False), "v1", "v2")


def test_a_worker_consumes_the_version_queue_of_each_queue_it_consumes() -> None:
    app = make_app(True)
    app.amqp.queues.select(["work", "billing"])  # celery worker -Q work,billing
    tasks = [SimpleNamespace(version=None), SimpleNamespace(version="v1")]
    added = consume_version_queues(app, worker_versions(app, tasks))
    assert added == ["billing@v1", "billing@v2", "work@v1", "work@v2"]
    assert {"work", "billing", *added} == set(app.amqp.queues.consume_from)
    assert consume_version_queues(app, {"v2"}) == ["billing@v2", "work@v2"]  # idempotent


def test_a_delivery_from_a_version_queue_records_the_base_queue() -> None:
    request = SimpleNamespace(delivery_info={"exchange": "work", "routing_key": "work@v1",
                                             "priority": 0})
    assert delivery_options(request)["queue"] == "work"
    assert "routing_key" not in delivery_options(request)
