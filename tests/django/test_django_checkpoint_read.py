"""DjangoStore reads a run's checkpoints on a plain cursor (binary on psycopg 3).

``begin`` and ``get_run`` load every checkpoint of a run in one query. On
PostgreSQL and SQLite that query runs on a plain cursor past ``values_list``
(binary results on psycopg 3); while Django logs queries it goes through
``values_list``. Both must give the same records, and Django's
``execute_wrapper()`` must see the query either way.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from django_support import make_django_store

from celery_durable.records import ErrorInfo, RunStatus, StepRecord, StepStatus


@pytest.fixture(params=["postgres", "sqlite"])
def store(request: pytest.FixtureRequest) -> Iterator[Any]:
    made = make_django_store(request.param)
    try:
        yield made
    finally:
        made.close()


def _written(store: Any) -> tuple[str, list[StepRecord]]:
    """A run with succeeded checkpoints (odd values and times) and a retrying one."""
    run_id = str(uuid.uuid4())
    began = store.begin(run_id, task="t", args="[]", kwargs="{}", options={}, owner="w1",
                        lease_ttl=60)
    steps = [StepRecord(pos, f"work#{pos}", "work", StepStatus.SUCCEEDED, 1,
                        value=f'"é{pos} <b>"', started_at=1763793000.123456 + pos,
                        finished_at=1763793000.654321 + pos) for pos in range(3)]
    steps.append(StepRecord(3, "flaky#0", "flaky", StepStatus.RETRYING, 2, value=None,
                            started_at=5.5, finished_at=6.25,
                            error=ErrorInfo("ValueError", "bad ✓", "Traceback …",
                                            ["a log line", "another"])))
    for record in steps[:3]:
        assert store.save_step(run_id, began.token, record)
    assert store.park(run_id, began.token, status=RunStatus.RETRYING, delay=0, due_in=60,
                      step=steps[3])
    return run_id, steps


def test_the_plain_cursor_and_values_list_read_the_same_records(
        store: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from django.db import connections
    from django.test.utils import CaptureQueriesContext

    from celery_durable_django.store import rows

    run_id, steps = _written(store)
    cursors: list[Any] = []
    real = rows._reading_cursor
    monkeypatch.setattr(rows, "_reading_cursor", lambda c: cursors.append(real(c)) or cursors[-1])
    conn = connections[store.using]
    seen: list[str] = []

    def wrapper(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        seen.append(sql)
        return execute(sql, params, many, context)

    with conn.execute_wrapper(wrapper):
        fast = store.get_run(run_id).steps
    assert fast == steps
    assert any('FROM "celery_durable_step"' in sql for sql in seen)
    assert len(cursors) == 1  # the plain cursor read them
    if store.using == "default":  # PostgreSQL (psycopg 3): in binary
        import psycopg

        assert cursors[0].cursor.format == psycopg.pq.Format.BINARY
    with CaptureQueriesContext(conn) as captured:  # Django logs: values_list
        logged = store.get_run(run_id).steps
    assert logged == steps
    assert len(cursors) == 1  # values_list read them
    assert any(run_id in q["sql"] and 'FROM "celery_durable_step"' in q["sql"]
               for q in captured.captured_queries)
    again = store.begin(run_id, task="t", args="[]", kwargs="{}", options={}, owner="w2",
                        lease_ttl=60)
    assert again.outcome == "acquired"
    assert [again.checkpoints[p] for p in sorted(again.checkpoints)] == steps


def test_a_store_on_a_non_default_database_reads_its_checkpoints(tmp_path: Any) -> None:
    """The checkpoint query is compiled for the store's own database: a DjangoStore on an
    alias other than ``default`` works even when ``default`` is not configured at all."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    code = f"""
import django
from django.conf import settings
settings.configure(
    DATABASES={{"default": {{}}, "durable": {{"ENGINE": "django.db.backends.sqlite3",
                                             "NAME": {str(tmp_path / "durable.sqlite3")!r}}}}},
    INSTALLED_APPS=["django.contrib.contenttypes", "celery_durable_django"], USE_TZ=True)
django.setup()
from django.core.management import call_command
call_command("migrate", database="durable", verbosity=0)
from celery_durable.records import StepRecord, StepStatus, RunStatus
from celery_durable_django.store import DjangoStore
store = DjangoStore(using="durable")
b = store.begin("r1", task="t", args="[]", kwargs="{{}}", options={{}}, owner="w", lease_ttl=60)
assert store.save_step("r1", b.token, StepRecord(0, "s#0", "s", StepStatus.SUCCEEDED,
                                                 value='"v"'))
assert store.park("r1", b.token, status=RunStatus.RETRYING, delay=0, due_in=60)
again = store.begin("r1", task="t", args="[]", kwargs="{{}}", options={{}}, owner="w2",
                    lease_ttl=60)
print(again.outcome, again.checkpoints[0].value)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=root, timeout=120, check=False)
    assert out.stdout.split() == ["acquired", '"v"'], out.stderr[-2000:]


def test_begin_hands_over_rows_that_become_the_same_records(store: Any) -> None:
    """``begin`` keeps the rows and builds a record only when asked (``RowCheckpoints``):
    the records, the replay shortcut and the mapping behave as the eager list does."""
    from celery_durable.records import succeeded_value

    run_id, steps = _written(store)
    again = store.begin(run_id, task="t", args="[]", kwargs="{}", options={}, owner="w2",
                        lease_ttl=60)
    cps = again.checkpoints
    assert again.outcome == "acquired" and again.run.steps == []
    eager = {s.position: s for s in store.get_run(run_id).steps}
    keys = [s.key for s in steps] + ["other#0"]
    assert {(p, k): cps.succeeded_value(p, k) for p in range(5) for k in keys} == {
        (p, k): succeeded_value(eager, p, k) for p in range(5) for k in keys}
    assert cps.succeeded_value(1, "work#1") == '"é1 <b>"'
    assert cps.last_step() == ("flaky#0", 2) and cps[3].error == steps[3].error
    assert list(cps) == [0, 1, 2, 3] and len(cps) == 4 and 3 in cps and 4 not in cps
    assert [cps[p] for p in cps] == steps and cps.get(4) is None
    added = StepRecord(4, "next#0", "next", StepStatus.SUCCEEDED, 1, value="7")
    cps[4] = added
    assert cps.succeeded_value(4, "next#0") == "7" and list(cps) == [0, 1, 2, 3, 4]
    cps[1] = StepRecord(1, "work#1", "work", StepStatus.FAILED, 3, error=ErrorInfo("E", "m", ""))
    assert cps.succeeded_value(1, "work#1") is None and len(cps) == 5  # replaced, not added
    del cps[0]
    assert 0 not in cps and cps.get(0) is None and cps.succeeded_value(0, "work#0") is None
    with pytest.raises(KeyError):
        del cps[0]


def test_an_empty_stored_value_replays_as_null(store: Any) -> None:
    run_id = str(uuid.uuid4())
    began = store.begin(run_id, task="t", args="[]", kwargs="{}", options={}, owner="w1",
                        lease_ttl=60)
    assert store.save_step(run_id, began.token, StepRecord(0, "nothing#0", "nothing",
                                                           StepStatus.SUCCEEDED, 1, value=""))
    assert store.park(run_id, began.token, status=RunStatus.RETRYING, delay=0, due_in=60)
    again = store.begin(run_id, task="t", args="[]", kwargs="{}", options={}, owner="w2",
                        lease_ttl=60)
    assert again.checkpoints.succeeded_value(0, "nothing#0") == "null"
    assert again.checkpoints.last_step() == ("nothing#0", 1)
