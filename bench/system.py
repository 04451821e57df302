"""Machine facts, software versions, and whether others were using the machine."""

from __future__ import annotations

import os
import platform
import sys
from importlib import metadata
from pathlib import Path
from typing import Any


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _ram_gib() -> float:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 1024 / 1024
    except OSError:
        pass
    return 0.0


def load() -> str:
    """The 1/5/15-minute load averages."""
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} {five:.2f} {fifteen:.2f}"


def machine() -> dict[str, Any]:
    """CPU count and model, RAM, kernel."""
    return {"nproc": os.cpu_count(), "cpu": _cpu_model(), "ram_gib": _ram_gib(),
            "kernel": f"{platform.system()} {platform.release()}", "load_start": load()}


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def versions(redis_url: str, pg_url: str) -> dict[str, str]:
    """Python, Celery, kombu, redis-py, Redis server, PostgreSQL, DBOS and friends."""
    import psycopg
    import redis

    client = redis.Redis.from_url(redis_url)
    try:
        redis_server = str(client.info("server").get("redis_version", "?"))
    finally:
        client.close()
    with psycopg.connect(pg_url) as conn:
        row = conn.execute("SHOW server_version").fetchone()
    return {"Python": sys.version.split()[0], "Celery": _version("celery"),
            "kombu": _version("kombu"), "redis-py": _version("redis"),
            "hiredis": _version("hiredis"), "Redis server": redis_server,
            "PostgreSQL": row[0] if row else "?", "DBOS": _version("dbos"),
            "Django": _version("django"), "psycopg": _version("psycopg"),
            "SQLite": __import__("sqlite3").sqlite_version}


def other_activity() -> list[str]:
    """Command lines of test runs, workers and benchmarks that are not this process's."""
    mine = {os.getpid(), os.getppid()}
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) in mine:
            continue
        try:
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if any(word in cmd for word in ("pytest", "celery", "bench")) and "python" in cmd:
            found.append(cmd.strip()[:120])
    return found
