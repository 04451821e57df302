"""Start a worker, submit an order, and print how the run recovered."""

from __future__ import annotations

import os
import random
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> int:
    """Run the quickstart end to end; returns a process exit code."""
    from shop import ledger, process_order

    import celery_durable

    env = {**os.environ, "PYTHONPATH": f"{HERE}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    worker = subprocess.Popen(
        [sys.executable, "-m", "celery", "--quiet", "-A", "shop", "worker", "-c", "2",
         "-l", "WARNING", "--without-gossip", "--without-mingle", "--without-heartbeat"],
        cwd=HERE, env=env)
    try:
        order_id = random.randint(1000, 9999)
        print(f"submitting process_order({order_id}) …")
        started = time.monotonic()
        result = process_order.delay(order_id)
        print("result:", result.get(timeout=60))
        print(f"finished in {time.monotonic() - started:.1f}s")
        run = celery_durable.get_run(result.id, app=process_order.app)
        print(f"\nrun {run.id}: {run.status}")
        for s in run.steps:
            print(f"  step {s.position} {s.key:<16} {s.status!s:<10} attempts={s.attempts}")
        print("\nexecutions counted outside the worker:", ledger.hgetall(f"demo:{order_id}"))
        print("fetch_order ran once, charge twice (it failed once), ship once.")
        return 0
    finally:
        worker.terminate()
        worker.wait(timeout=15)


if __name__ == "__main__":
    sys.path.insert(0, str(HERE))
    raise SystemExit(main())
