"""Physical reference figures: one Redis round trip, one database INSERT + COMMIT.

Measured from the driver process with the same clients the stores use
(redis-py, psycopg, sqlite3), each trial the mean over ``ops`` operations.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .measure import summary


def _mean_op(op: Callable[[int], object], ops: int) -> float:
    t0 = time.perf_counter()
    for i in range(ops):
        op(i)
    return (time.perf_counter() - t0) / ops


def redis_figures(redis_url: str, prefix: str, trials: int, ops: int) -> dict[str, Any]:
    """PING and HSET round trips from redis-py (seconds per operation)."""
    import redis

    client = redis.Redis.from_url(redis_url)
    key = f"{prefix}ref:hset"
    try:
        client.ping()
        out = {
            "ping": summary([_mean_op(lambda i: client.ping(), ops) for _ in range(trials)]),
            "hset": summary([_mean_op(lambda i: client.hset(key, f"v:{i}", "1"), ops)
                             for _ in range(trials)]),
        }
    finally:
        client.delete(key)
        client.close()
    return out


def postgres_insert_commit(url: str, trials: int, ops: int) -> dict[str, Any]:
    """One ``INSERT`` + ``COMMIT`` with psycopg (fsync as the server is configured)."""
    import psycopg

    with psycopg.connect(url) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS bench_ref (id bigserial PRIMARY KEY, "
                     "run text, pos int, value text)")
        conn.commit()

        def op(i: int) -> None:
            conn.execute("INSERT INTO bench_ref (run, pos, value) VALUES (%s, %s, %s)",
                         ("r", i, "1"))
            conn.commit()

        result = summary([_mean_op(op, ops) for _ in range(trials)])
        fsync = conn.execute("SHOW fsync").fetchone()
        sync_commit = conn.execute("SHOW synchronous_commit").fetchone()
        conn.execute("DROP TABLE bench_ref")
        conn.commit()
    result["settings"] = {"fsync": fsync[0] if fsync else "?",
                          "synchronous_commit": sync_commit[0] if sync_commit else "?"}
    return result


def sqlite_insert_commit(path: Path, trials: int, ops: int) -> dict[str, Any]:
    """One ``INSERT`` + ``COMMIT`` on an SQLite file in WAL mode (as the Django contender)."""
    conn = sqlite3.connect(path)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("CREATE TABLE IF NOT EXISTS bench_ref (id INTEGER PRIMARY KEY, run TEXT, "
                     "pos INT, value TEXT)")
        conn.commit()

        def op(i: int) -> None:
            conn.execute("INSERT INTO bench_ref (run, pos, value) VALUES (?, ?, ?)",
                         ("r", i, "1"))
            conn.commit()

        return summary([_mean_op(op, ops) for _ in range(trials)])
    finally:
        conn.close()
        path.unlink(missing_ok=True)


def measure_all(redis_url: str, prefix: str, pg_url: str, sqlite_path: Path, *,
                trials: int, quick: bool) -> dict[str, Any]:
    """Every reference figure."""
    ops = 200 if quick else 1000
    out = redis_figures(redis_url, prefix, trials, ops)
    out["pg_insert_commit"] = postgres_insert_commit(pg_url, trials, ops // 2)
    out["sqlite_insert_commit"] = sqlite_insert_commit(sqlite_path, trials, ops // 2)
    return out
