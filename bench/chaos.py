"""The chaos suite: N durable runs x 10 steps on 3 workers while a monkey breaks things.

    scripts/chaos                              # 500 runs, Redis broker, Redis store
    scripts/chaos --broker rabbitmq            # RabbitMQ broker (amqp://guest:guest@127.0.0.1:5672//)
    scripts/chaos --store django               # Django store on a private PostgreSQL
    scripts/chaos --runs 100 --seed 7 --json out.json

The suite starts its own redis-server (AOF, ``appendfsync always``) and, for
the Django store, its own PostgreSQL; it never touches the machine's shared
servers (RabbitMQ is shared: the suite only uses a queue of its own there and
deletes it). A seeded monkey SIGKILLs random workers (each killed worker is
replaced), crashes and restarts Redis, and crashes and restarts PostgreSQL,
for ``--chaos-seconds`` or until every run has finished; then the suite waits
for the runs to drain.

Every step appends ``B <run> <position> <pid>`` to a ledger file when it
starts, and the engine's test hook appends ``S <run> <position>`` right after
the step's checkpoint is saved. A step started after its checkpoint was saved
is a *completed step executed again* (must be 0); several starts before the
first save are *in-flight repeats* (a crash or a restart interrupted the step
before its checkpoint: at-least-once).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RABBITMQ = "amqp://guest:guest@127.0.0.1:5672//"
STEPS = 10


@dataclass
class Report:
    """What one chaos run measured."""

    broker: str
    store: str
    seed: int
    runs: int
    steps_per_run: int
    finished: int = 0
    lost: int = 0
    failed: int = 0
    wrong_result: int = 0
    completed_steps_repeated: int = 0
    in_flight_repeats: int = 0
    step_starts: int = 0
    worker_kills: int = 0
    redis_restarts: int = 0
    postgres_restarts: int = 0
    chaos_seconds: float = 0.0
    drain_seconds: float = 0.0
    total_seconds: float = 0.0
    examples: list[str] = field(default_factory=list)


class Fleet:
    """The 3 worker processes; killed ones are replaced by fresh ones."""

    def __init__(self, env: dict[str, str], logdir: Path, size: int = 3,
                 concurrency: int = 2) -> None:
        self.env, self.logdir, self.concurrency = env, logdir, concurrency
        self.procs: list[subprocess.Popen[bytes]] = []
        self.started = 0
        for _ in range(size):
            self.procs.append(self._spawn())

    def _spawn(self) -> subprocess.Popen[bytes]:
        self.started += 1
        log = open(self.logdir / f"worker{self.started}.log", "ab")  # noqa: SIM115
        proc = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "bench.chaos_app", "worker", "-Q",
             self.env["CHAOS_QUEUE"], "-c", str(self.concurrency), "-P", "prefork", "-n",
             f"chaos{self.started}-{uuid.uuid4().hex[:4]}@%h", "-l", "WARNING",
             "--without-gossip", "--without-mingle", "--without-heartbeat"],
            cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True)
        log.close()
        return proc

    def kill_one(self, rng: random.Random) -> None:
        """SIGKILL one worker and its pool (a lost host), and start a replacement."""
        i = rng.randrange(len(self.procs))
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.procs[i].pid, signal.SIGKILL)
        self.procs[i].wait()
        self.procs[i] = self._spawn()

    def stop(self) -> None:
        """Warm shutdown of every worker, SIGKILL after 15 s."""
        for p in self.procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGKILL)
                p.wait()


def analyse(ledger: Path, report: Report) -> dict[str, dict[int, int]]:
    """Count in-flight repeats and completed steps started again; return starts per run."""
    saved: dict[tuple[str, int], bool] = {}
    starts: dict[str, dict[int, int]] = defaultdict(lambda: defaultdict(int))
    before_save: dict[tuple[str, int], int] = defaultdict(int)
    for line in ledger.read_text().splitlines():
        parts = line.split()
        if len(parts) >= 3 and parts[0] == "S":
            saved[(parts[1], int(parts[2]))] = True
        elif len(parts) == 4 and parts[0] == "B":
            key = (parts[1], int(parts[2]))
            starts[parts[1]][key[1]] += 1
            report.step_starts += 1
            if saved.get(key):
                report.completed_steps_repeated += 1
                if len(report.examples) < 10:
                    report.examples.append(f"{key[0]} step {key[1]} started after its checkpoint")
            else:
                before_save[key] += 1
    report.in_flight_repeats = sum(n - 1 for n in before_save.values() if n > 1)
    return starts


def monkey(args: argparse.Namespace, fleet: Fleet, redis_srv: Any, pg: Any,
           stop: threading.Event, report: Report, rng: random.Random) -> None:
    """Until ``stop``: kill a worker every 2-5 s; crash Redis and PostgreSQL every 10-20 s."""
    now = time.monotonic()
    next_kill = now + rng.uniform(1, 3)
    next_redis = now + (args.first_redis_crash if args.first_redis_crash is not None
                        else rng.uniform(5, 12))
    next_pg = now + rng.uniform(5, 12)
    while not stop.wait(0.1):
        now = time.monotonic()
        if now >= next_kill:
            fleet.kill_one(rng)
            report.worker_kills += 1
            next_kill = now + rng.uniform(2, 5)
        if args.redis_restarts and now >= next_redis:
            redis_srv.crash(down=rng.uniform(0.5, 2.0))
            report.redis_restarts += 1
            next_redis = time.monotonic() + rng.uniform(10, 20)
        if pg is not None and now >= next_pg:
            pg.crash(down=rng.uniform(0.5, 2.0))
            report.postgres_restarts += 1
            next_pg = time.monotonic() + rng.uniform(10, 20)


def run(args: argparse.Namespace) -> Report:
    """One chaos run; returns its report."""
    from chaos_servers import OwnPostgres, OwnRedis

    rng = random.Random(args.seed)
    report = Report(broker=args.broker, store=args.store, seed=args.seed, runs=args.runs,
                    steps_per_run=STEPS)
    work = Path(tempfile.mkdtemp(prefix="chaos-"))
    ledger = work / "ledger"
    redis_srv = OwnRedis()
    pg = OwnPostgres() if args.store == "django" else None
    queue = f"chaos-{uuid.uuid4().hex[:8]}"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "bench")]),
           "CHAOS_REDIS": redis_srv.url, "CHAOS_QUEUE": queue, "CHAOS_LEDGER": str(ledger),
           "CHAOS_STEP_MS": str(args.step_ms), "CELERY_DURABLE_CRASH_DIR": str(work),
           "CHAOS_BROKER": RABBITMQ if args.broker == "rabbitmq" else f"{redis_srv.url}/0"}
    if pg is not None:
        env.update(CHAOS_STORE="django://", CHAOS_PG_URL=pg.create_database("chaos"))
    os.environ.update({k: v for k, v in env.items() if k.startswith("CHAOS_")})
    sys.path[:0] = [str(ROOT), str(ROOT / "bench")]
    if pg is not None:
        from django.core.management import call_command

        import bench.chaos_app  # noqa: F401 - django.setup() with the chaos database
        call_command("migrate", verbosity=0)
    from bench.chaos_app import app, chaos_run
    from celery_durable import get_run
    from celery_durable.errors import RunNotFoundError

    fleet = Fleet(env, work)
    stop = threading.Event()
    started = time.monotonic()
    try:
        ids = [str(uuid.uuid4()) for _ in range(args.runs)]
        for run_id in ids:
            chaos_run.apply_async((STEPS,), task_id=run_id)
        thread = threading.Thread(target=monkey, daemon=True,
                                  args=(args, fleet, redis_srv, pg, stop, report, rng))
        thread.start()

        def unfinished() -> list[str] | None:
            """The runs not finished yet; None while the store cannot be read."""
            left = []
            for run_id in ids:
                try:
                    info = get_run(run_id, app=app)
                except RunNotFoundError:
                    left.append(run_id)
                    continue
                except Exception:  # the store is being restarted
                    return None
                if not info.status.finished:
                    left.append(run_id)
            return left

        chaos_end = started + args.chaos_seconds
        left: list[str] | None = ids
        while time.monotonic() < chaos_end and left != []:
            time.sleep(2)
            left = unfinished()
            done = "store unreachable" if left is None else f"{len(ids) - len(left)}/{len(ids)}"
            print(f"[chaos {time.monotonic() - started:5.0f}s] {done} finished, "
                  f"{report.worker_kills} kills, "
                  f"{report.redis_restarts} redis, {report.postgres_restarts} pg restarts",
                  flush=True)
        stop.set()
        thread.join()
        report.chaos_seconds = round(time.monotonic() - started, 1)
        drain_start = time.monotonic()
        while left != [] and time.monotonic() - drain_start < args.drain_timeout:
            time.sleep(1)
            left = unfinished()
        report.drain_seconds = round(time.monotonic() - drain_start, 1)
        report.total_seconds = round(time.monotonic() - started, 1)
        for run_id in ids:
            try:
                info = get_run(run_id, app=app)
            except RunNotFoundError:
                report.lost += 1
                report.examples.append(f"{run_id}: never started")
                continue
            if info.status.value == "SUCCEEDED":
                report.finished += 1
                if info.result != sum(range(STEPS)):
                    report.wrong_result += 1
            elif info.status.value == "FAILED":
                report.failed += 1
                report.lost += 1
                if len(report.examples) < 10:
                    err = info.error
                    report.examples.append(f"{run_id}: FAILED {err.type if err else ''}: "
                                           f"{err.message[:200] if err else ''}")
            else:
                report.lost += 1
                if len(report.examples) < 10:
                    report.examples.append(f"{run_id}: still {info.status.value}")
        analyse(ledger, report)
        return report
    finally:
        stop.set()
        fleet.stop()
        if args.broker == "rabbitmq":
            with contextlib.suppress(Exception), app.connection_for_write() as conn:
                conn.default_channel.queue_delete(queue)
        if pg is not None:
            from django.db import connections

            connections.close_all()
            pg.stop()
        redis_srv.stop()
        if args.keep:
            print(f"logs and ledger kept in {work}")


def main(argv: list[str] | None = None) -> int:
    """Parse the flags, run the suite, print (and optionally save) the report."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=500)
    parser.add_argument("--broker", choices=["redis", "rabbitmq"], default="redis")
    parser.add_argument("--store", choices=["redis", "django"], default="redis")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--step-ms", type=float, default=50.0, help="mean step duration")
    parser.add_argument("--chaos-seconds", type=float, default=90.0)
    parser.add_argument("--drain-timeout", type=float, default=150.0)
    parser.add_argument("--no-redis-restarts", dest="redis_restarts", action="store_false")
    parser.add_argument("--first-redis-crash", type=float, default=None,
                        help="seconds into the chaos of the first Redis crash (default 5-12)")
    parser.add_argument("--json", type=Path, help="append the report to this JSON-lines file")
    parser.add_argument("--keep", action="store_true", help="keep worker logs and the ledger")
    args = parser.parse_args(argv)
    report = run(args)
    print(json.dumps(asdict(report), indent=2))
    if args.json:
        with args.json.open("a") as f:
            f.write(json.dumps(asdict(report)) + "\n")
    ok = report.lost == 0 and report.completed_steps_repeated == 0 and not report.wrong_result
    print("OK: nothing lost, no completed step executed twice" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
