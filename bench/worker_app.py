"""The Celery app every benchmark worker runs: the same trivial N-step job per contender.

Configured from environment variables set by the driver:

* ``BENCH_REDIS_URL`` broker and result backend; ``BENCH_PREFIX`` the
  ``global_keyprefix`` of both (so a run's keys are namespaced and removable);
* ``BENCH_STORE`` the ``durable_store`` (empty: derived from the Redis result
  backend, i.e. ``RedisStore``; ``django://``: ``DjangoStore`` with
  ``bench.django_settings``; ``db+…``: the SQL store, its tables created on start);
* ``BENCH_RAW_SQL`` the database of the INSERT+COMMIT ideal (``bench.raw_insert``):
  ``postgres`` (default, ``BENCH_PG_URL``) or ``mysql`` (``BENCH_MYSQL_URL``, PyMySQL).

Every job returns ``{"n": steps, "body": seconds}`` where ``body`` is the
time the task body spent in its steps, measured with ``perf_counter`` inside
the worker, so broker latency does not pollute the per-step figures.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

import redis
from celery import Celery
from celery.signals import task_prerun

from celery_durable import durable_task, step

PREFIX = os.environ.get("BENCH_PREFIX", "bench-local:")
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
STORE = os.environ.get("BENCH_STORE", "")

if STORE.startswith("django"):
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.django_settings")
    import django

    django.setup()

app = Celery("bench", broker=REDIS_URL, backend=REDIS_URL)
app.conf.update(
    task_default_queue=f"{PREFIX}default",
    broker_transport_options={"global_keyprefix": PREFIX},
    result_backend_transport_options={"global_keyprefix": PREFIX},
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
    result_expires=3600,
)
if STORE:
    app.conf.durable_store = STORE
    app.conf.durable_sql_create_tables = True  # (used by the SQL store only)
if STORE.startswith("django"):
    # Celery's Django fixup closes every DB connection before and after each task
    # unless CELERY_DB_REUSE_MAX is set (celery#9824); without it CONN_MAX_AGE has no
    # effect and every job pays a new PostgreSQL connection. docs/django-admin.md.
    app.conf.CELERY_DB_REUSE_MAX = 1000

_client: redis.Redis | None = None


def client() -> redis.Redis:
    """This process's redis-py client for the raw-HSET contender."""
    global _client
    if _client is None:
        _client = redis.Redis.from_url(REDIS_URL)
    return _client


def work(x: int) -> int:
    """The trivial unit of work every contender repeats (one 'step')."""
    return x + 1


work_step = step(name="work")(work)


@app.task(name="bench.ping")
def ping() -> int:
    """Readiness probe: the pid of the pool process that ran it."""
    return os.getpid()


@app.task(name="bench.plain")
def plain(n: int) -> dict[str, Any]:
    """Contender 1: n steps, no checkpoints (the floor)."""
    t0 = time.perf_counter()
    x = 0
    for _ in range(n):
        x = work(x)
    return {"n": n, "body": time.perf_counter() - t0, "x": x}


@app.task(name="bench.link")
def link(x: int) -> int:
    """Contender 2: one link of a Celery chain (the chain of 10 is the job)."""
    return work(x)


@app.task(name="bench.raw_hset", bind=True)
def raw_hset(self: Any, n: int) -> dict[str, Any]:
    """Contender 3: n steps with one raw ``HSET`` of the step's value after each (the ideal)."""
    r = client()
    key = f"{PREFIX}raw:{self.request.id}"
    t0 = time.perf_counter()
    x = 0
    for i in range(n):
        x = work(x)
        r.hset(key, f"v:{i}", json.dumps(x))
    return {"n": n, "body": time.perf_counter() - t0, "x": x}


_sql: Any = None


def _raw_connection() -> Any:
    """This process's connection for the INSERT+COMMIT ideal, its table created once."""
    global _sql
    if _sql is None:
        if os.environ.get("BENCH_RAW_SQL") == "mysql":
            import pymysql
            from sqlalchemy import make_url

            url = make_url(os.environ["BENCH_MYSQL_URL"])
            _sql = pymysql.connect(host=url.host, port=url.port or 3306, user=url.username,
                                   password=url.password or "", database=url.database)
            with _sql.cursor() as cursor:
                cursor.execute("CREATE TABLE IF NOT EXISTS bench_raw (id bigint AUTO_INCREMENT "
                               "PRIMARY KEY, run varchar(255), pos int, value longtext)")
        else:
            import psycopg

            _sql = psycopg.connect(os.environ["BENCH_PG_URL"])
            _sql.execute("CREATE TABLE IF NOT EXISTS bench_raw (id bigserial PRIMARY KEY, "
                         "run text, pos int, value text)")
        _sql.commit()
    return _sql


@app.task(name="bench.raw_insert")
def raw_insert(n: int) -> dict[str, Any]:
    """The SQL ideal: n steps with one raw ``INSERT`` + ``COMMIT`` after each (psycopg on
    PostgreSQL, PyMySQL on MySQL/MariaDB: ``BENCH_RAW_SQL``)."""
    conn = _raw_connection()
    run = raw_insert.request.id
    t0 = time.perf_counter()
    x = 0
    for i in range(n):
        x = work(x)
        with conn.cursor() as cursor:
            cursor.execute("INSERT INTO bench_raw (run, pos, value) VALUES (%s, %s, %s)",
                           (run, i, json.dumps(x)))
        conn.commit()
    return {"n": n, "body": time.perf_counter() - t0, "x": x}


@durable_task(app=app, name="bench.durable")
def durable(n: int) -> dict[str, Any]:
    """Contenders 4 and 5: n ``@step`` calls, each checkpointed by the configured store."""
    t0 = time.perf_counter()
    x = 0
    for _ in range(n):
        x = work_step(x)
    return {"n": n, "body": time.perf_counter() - t0, "x": x}


_delivered: dict[str, float] = {}


@task_prerun.connect
def _note_delivery(task_id: str, task: Any, args: Any = (), **_: Any) -> None:
    """When a redelivered ``bench.resumer`` run reached its pool process (kept in memory)."""
    if task.name == "bench.resumer" and task.request.retries:
        _delivered[args[1]] = time.time()


@step(name="flaky", max_attempts=3, backoff=0)
def flaky(probe: str) -> float:
    """Fails on its first attempt (after noting the time), succeeds on the next.

    The times go to the ``probe`` hash in Redis, outside the store, so the
    driver reads them for every store: ``fail`` just before the first attempt
    raises; ``delivered`` (the redelivery reached a pool process, before the
    engine's ``begin``) and ``resumed`` (the second attempt starts, after the
    replay) in one write after the second attempt has taken its time.
    """
    now = time.time()
    if step.context().attempt == 1:
        client().hset(probe, "fail", repr(now))
        raise ConnectionError("injected failure (bench.resumer)")
    client().hset(probe, mapping={"delivered": repr(_delivered.pop(probe, 0.0)),
                                  "resumed": repr(now)})
    return now


@durable_task(app=app, name="bench.resumer")
def resumer(n: int, probe: str) -> int:
    """n steps, then a step that fails once: resumed by a new delivery after n checkpoints."""
    x = 0
    for _ in range(n):
        x = work_step(x)
    flaky(probe)
    return x


try:  # sleep() lands with the waits module (another engineer's work)
    from celery_durable.controls.waits import sleep as durable_sleep
except ImportError:  # pragma: no cover - depends on the state of the tree
    durable_sleep = None

if durable_sleep is not None:
    from datetime import timedelta

    @durable_task(app=app, name="bench.sleeper")
    def sleeper(i: int) -> int:
        """A run that does one step and then sleeps for a day (suspended, worker released)."""
        x = work_step(i)
        durable_sleep(timedelta(days=1))
        return int(x)
