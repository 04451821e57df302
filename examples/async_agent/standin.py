"""Stand-in tools for agent.py: ``/search``, ``/weather`` and ``/stock`` answer JSON after
``--delay`` seconds each, and count how many requests were in flight at once.

    python standin.py [--port 8766] [--delay 0.3]
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse


class Tools(ThreadingHTTPServer):
    """The stand-in server: requests served, and the most in flight at one time."""

    daemon_threads = True

    def __init__(self, port: int, delay: float) -> None:
        super().__init__(("127.0.0.1", port), _Handler)
        self.delay, self.lock = delay, threading.Lock()
        self.served: list[str] = []
        self.in_flight = self.most_in_flight = 0


class _Handler(BaseHTTPRequestHandler):
    server: Tools

    def do_GET(self) -> None:
        url = urlparse(self.path)
        params = {k: v[-1] for k, v in parse_qs(url.query).items()}
        tool = url.path.strip("/")
        if tool not in ("search", "weather", "stock"):
            self.send_error(404)
            return
        with self.server.lock:
            self.server.in_flight += 1
            self.server.most_in_flight = max(self.server.most_in_flight,
                                             self.server.in_flight)
        try:
            time.sleep(self.server.delay)
            answer = {"search": lambda: f"3 results for {params.get('q')!r}",
                      "weather": lambda: f"sunny in {params.get('city')}",
                      "stock": lambda: f"{params.get('symbol')} at 42.0"}[tool]()
        finally:
            with self.server.lock:
                self.server.in_flight -= 1
                self.server.served.append(tool)
        body = json.dumps({"tool": tool, "answer": answer}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


def serve(port: int = 8766, delay: float = 0.3) -> Tools:
    """Start the stand-in tools in a thread; the server (``shutdown()`` stops it)."""
    tools = Tools(port, delay)
    threading.Thread(target=tools.serve_forever, daemon=True).start()
    return tools


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8766)
    parser.add_argument("--delay", type=float, default=0.3)
    options = parser.parse_args()
    serve(options.port, options.delay)
    print(f"stand-in tools on http://127.0.0.1:{options.port} (Ctrl-C stops them)")
    threading.Event().wait()
