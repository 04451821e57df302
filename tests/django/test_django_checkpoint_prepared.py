"""DjangoStore's checkpoint on PostgreSQL: a prepared statement that still checks the token.

``save_step`` runs one ``INSERT … WHERE EXISTS (the run holds the token)``
statement; on psycopg 3 it is prepared once per connection. These tests look
at the server's ``pg_prepared_statements`` to see whether it was, and check
that the token is still enforced, in autocommit and inside ``atomic()``.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from django_support import make_django_store

pytestmark = pytest.mark.usefixtures("django_pg")

class _Rollback(Exception):
    """Raised to leave an ``atomic()`` block with a rollback."""


CHECKPOINT = "%INSERT INTO \"celery_durable_step\"%WHERE EXISTS%"
#: The query that loads a run's checkpoints (``rows.step_records``): never prepared.
READ = "SELECT%FROM \"celery_durable_step\"%"


def _step(position: int, value: str = "1") -> Any:
    from celery_durable.records import StepRecord, StepStatus

    return StepRecord(position=position, key=f"work#{position}", name="work",
                      status=StepStatus.SUCCEEDED, value=value, started_at=1.0,
                      finished_at=2.0)


def _begin(store: Any) -> tuple[str, int]:
    run_id = str(uuid.uuid4())
    began = store.begin(run_id, task="t", args="[]", kwargs="{}", options={}, owner="w1",
                        lease_ttl=60)
    assert began.token is not None
    return run_id, began.token


def _prepared(alias: str, pattern: str = CHECKPOINT) -> int:
    """How many statements like ``pattern`` the connection of ``alias`` has prepared (not
    counting a transactional step's checkpoint, the same statement ``FOR UPDATE``)."""
    from django.db import connections

    with connections[alias].cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_prepared_statements WHERE statement LIKE %s "
                       "AND statement NOT LIKE %s", [pattern, "%FOR UPDATE%"])
        return int(cursor.fetchone()[0])


def _values(store: Any, run_id: str) -> list[tuple[int, str | None]]:
    run = store.get_run(run_id)
    return [(s.position, s.value) for s in run.steps]


@pytest.fixture
def store() -> Iterator[Any]:
    made = make_django_store("postgres")
    try:
        yield made
    finally:
        made.close()


def test_checkpoint_is_prepared_and_refuses_a_stale_token(store):
    """In autocommit (Django's default) the statement is prepared on the connection,
    writes under the token, upserts, and refuses a stale token or a released lease."""
    from django.db import connections

    run_id, token = _begin(store)
    for i in range(3):
        assert store.save_step(run_id, token, _step(i))
    assert store.save_step(run_id, token, _step(1, "again"))  # upsert on (run, position)
    assert _prepared("default") == 1
    assert connections["default"].connection.prepare_threshold is None  # Django's, untouched
    assert not store.save_step(run_id, token - 1, _step(3))
    assert not store.save_step(run_id + "-missing", token, _step(0))
    store.cancel(run_id)  # a new token, and no owner
    assert not store.save_step(run_id, token, _step(4))
    assert not store.save_step(run_id, token + 1, _step(4))
    assert _values(store, run_id) == [(0, "1"), (1, "again"), (2, "1")]
    assert _prepared("default") == 1


def test_checkpoint_inside_atomic_follows_the_transaction(store):
    """Inside ``transaction.atomic()`` the prepared statement runs in the caller's
    transaction: refused with a stale token, rolled back with it, usable again after
    a rollback (psycopg deallocates its statements then) and after a savepoint rollback."""
    from django.db import transaction

    run_id, token = _begin(store)
    assert store.save_step(run_id, token, _step(0))
    with transaction.atomic():
        assert store.save_step(run_id, token, _step(1))
        assert not store.save_step(run_id, token + 1, _step(2))
        with pytest.raises(_Rollback), transaction.atomic():  # a savepoint
            assert store.save_step(run_id, token, _step(3))
            raise _Rollback
        assert store.save_step(run_id, token, _step(4))
    assert _values(store, run_id) == [(0, "1"), (1, "1"), (4, "1")]

    with pytest.raises(_Rollback), transaction.atomic():
        assert store.save_step(run_id, token, _step(5))
        raise _Rollback
    assert _values(store, run_id) == [(0, "1"), (1, "1"), (4, "1")]
    assert store.save_step(run_id, token, _step(5))  # prepared again after the rollback
    assert _prepared("default") == 1
    assert _values(store, run_id)[-1] == (5, "1")


def test_execute_wrappers_and_the_query_log_see_the_checkpoint(store):
    """The prepared statement goes through Django's cursor wrapper like any query; while
    Django logs queries it runs unprepared, so the log shows its SQL with the values."""
    from django.db import connections
    from django.test.utils import CaptureQueriesContext

    conn = connections["default"]
    run_id, token = _begin(store)
    seen: list[str] = []

    def wrapper(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        seen.append(sql)
        return execute(sql, params, many, context)

    with conn.execute_wrapper(wrapper):
        assert store.save_step(run_id, token, _step(0))
        assert not store.save_step(run_id, token + 1, _step(1))
    assert len(seen) == 2 and all('INSERT INTO "celery_durable_step"' in s for s in seen)
    assert _prepared("default") == 1

    with CaptureQueriesContext(conn) as captured:
        assert store.save_step(run_id, token, _step(2, "logged"))
        assert not store.save_step(run_id, token + 1, _step(3))
    logged = [q["sql"] for q in captured.captured_queries]
    assert len(logged) == 2 and "'logged'" in logged[0] and run_id in logged[1]
    assert _values(store, run_id) == [(0, "1"), (2, "logged")]


@pytest.mark.parametrize(("extra", "prepared"), [
    ({"OPTIONS": {"prepare_threshold": None}}, 0),
    ({"DISABLE_SERVER_SIDE_CURSORS": True}, 0),
    ({"OPTIONS": {"prepare_threshold": 100}}, 1),
    ({"DISABLE_SERVER_SIDE_CURSORS": True, "OPTIONS": {"prepare_threshold": 0}}, 0),
], ids=["prepare_threshold-None", "disable-server-side-cursors", "prepare_threshold-100",
        "pooler-with-threshold-0"])
def test_settings_that_forbid_prepared_statements_are_respected(store, extra, prepared):
    """``OPTIONS["prepare_threshold"] = None`` or ``DISABLE_SERVER_SIDE_CURSORS`` (a pooler
    in transaction mode) keeps the statement unprepared; a numeric threshold prepares it at
    once. The token is checked either way. The query loading the checkpoints is never
    prepared, whatever the threshold (psycopg would prepare it at ``0``)."""
    from django.db import connections

    from celery_durable_django.store import DjangoStore

    alias = f"pg-{uuid.uuid4().hex[:6]}"
    connections.settings[alias] = {**connections["default"].settings_dict, **extra}
    try:
        other = DjangoStore(using=alias)
        run_id, token = _begin(other)
        for i in range(7):
            assert other.save_step(run_id, token, _step(i))
        assert not other.save_step(run_id, token + 1, _step(7))
        assert _prepared(alias) == prepared
        assert len(_values(other, run_id)) == 7
        assert _prepared(alias, READ) == 0
        threshold = extra.get("OPTIONS", {}).get("prepare_threshold")
        assert connections[alias].connection.prepare_threshold == threshold
    finally:
        connections[alias].close()
        del connections[alias]
        del connections.settings[alias]
