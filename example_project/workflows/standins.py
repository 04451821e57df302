"""STAND-INS for the external services the example workflows call. Not part of celery_durable.

The demo runs without internet, so a payment API, inventory and shipping
APIs, a "language model" and two research tools are played by this one small
HTTP server on 127.0.0.1 (``python manage.py standins``). Each behaves like
the real thing where durability matters:

* ``POST /payments/charges`` honours the ``Idempotency-Key`` header: a
  repeated key returns the original charge instead of charging twice. The
  card ``tok_declined`` is refused with 402. Like a real payment provider it
  confirms each new charge later with a webhook: a signed ``POST`` to
  ``<callback>/durable/events/payment.succeeded/<charge id>`` (celery_durable's
  signed event endpoint), retried until the site answers.
* ``POST /inventory/reservations``, ``POST /shipping/labels``: idempotent
  by key too.
* ``POST /model/complete``: a scripted "model" (no AI in it) that plans a
  search, a read and a calculation, then answers; or writes a draft.
* ``GET /tools/search`` is rate-limited (429 with ``Retry-After``) to about
  two requests per second; ``GET /tools/read``, ``GET /tools/calculate``.
* ``GET /stats``: what each service did (charges made, replays, failures).

Every service except the tools fails a request with 503 at ``--fail-rate``,
at most ``--max-failures`` times in a row for the same idempotency key (a
real service makes no such promise: that is what ``max_attempts`` and the
dead-letter view are for). Responses take 20-120 ms.
"""

from __future__ import annotations

import ast
import hashlib
import hmac
import json
import math
import operator
import random
import re
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.error import HTTPError, URLError
from urllib.parse import parse_qs, urlparse
from urllib.request import Request, urlopen

#: The research tools' pretend web: (url, title, text).
CORPUS = [
    ("https://docs.example/celery-retries", "Retrying Celery tasks",
     "A task can retry itself with self.retry(); acks_late redelivers the message when the "
     "worker dies. Retrying a whole task repeats every side effect it already made."),
    ("https://docs.example/durable-execution", "Durable execution",
     "Durable execution checkpoints each step of a workflow, so a crashed run resumes after "
     "its last completed step instead of starting over."),
    ("https://docs.example/idempotency", "Idempotency keys",
     "Payment APIs accept an idempotency key: a retried request with the same key returns "
     "the original result, so a customer is charged once however often the call is repeated."),
    ("https://docs.example/rate-limits", "Rate limits",
     "An API that is called too often answers 429 Too Many Requests with a Retry-After "
     "header: wait that long, then try again."),
    ("https://docs.example/redis", "Redis",
     "Redis keeps data in memory and answers in well under a millisecond; a brokered queue "
     "of 10000 messages takes about 2 MB."),
]
_OPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
        ast.Div: operator.truediv, ast.Pow: operator.pow, ast.USub: operator.neg}


def calculate(expression: str) -> float:
    """Evaluate plain arithmetic (``+ - * / **``, parentheses) without ``eval``."""
    def walk(node: ast.AST) -> float:
        if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)):
            return float(node.value)
        if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
            return float(_OPS[type(node.op)](walk(node.left), walk(node.right)))
        if isinstance(node, ast.UnaryOp) and type(node.op) in _OPS:
            return float(_OPS[type(node.op)](walk(node.operand)))
        raise ValueError(f"not arithmetic: {expression!r}")
    return walk(ast.parse(expression, mode="eval").body)


def search(query: str) -> list[dict[str, str]]:
    """The three pages of the pretend web sharing the most words with ``query``."""
    words = set(re.findall(r"[a-z]+", query.lower()))
    ranked = sorted(CORPUS, key=lambda page: -len(words & set(re.findall(
        r"[a-z]+", (page[1] + " " + page[2]).lower()))))
    return [{"url": url, "title": title} for url, title, _ in ranked[:3]]


def plan(question: str, observations: list[dict[str, Any]]) -> dict[str, Any]:
    """The scripted "model": search, read the best hit, maybe calculate, then answer."""
    done = [o["tool"] for o in observations]
    if "search" not in done:
        return {"type": "tool_call", "tool": "search", "input": {"query": question}}
    if "read" not in done:
        hits = next(o["output"] for o in observations if o["tool"] == "search")["results"]
        return {"type": "tool_call", "tool": "read", "input": {"url": hits[0]["url"]}}
    numbers = re.findall(r"\d+(?:\.\d+)?", question)
    if len(numbers) >= 2 and "calculate" not in done:
        return {"type": "tool_call", "tool": "calculate",
                "input": {"expression": " * ".join(numbers[:2])}}
    page = next(o["output"] for o in observations if o["tool"] == "read")
    answer = f"{page['text'].split('. ')[0]}. (source: {page['url']})"
    if "calculate" in done:
        result = next(o["output"] for o in observations if o["tool"] == "calculate")
        answer += f" The figure you asked about comes to {result['value']:g}."
    return {"type": "answer", "text": answer}


class Services:
    """The state of all stand-in services (thread-safe)."""

    def __init__(self, fail_rate: float, max_failures: int, search_per_second: float,
                 callback: tuple[str, str] | None = None):
        #: (site URL, signing secret) of the payment webhook; None sends none.
        self.callback = callback
        self.fail_rate = fail_rate
        self.max_failures = max_failures
        self.search_interval = 1.0 / search_per_second if search_per_second > 0 else 0.0
        self.lock = threading.Lock()
        self.stats: Counter[str] = Counter()
        self.in_a_row: Counter[str] = Counter()
        self.done: dict[str, dict[str, Any]] = {}   # idempotency key -> first response
        self.next_search = 0.0

    def count(self, name: str) -> None:
        """Add one to the counter ``name`` of ``/stats``."""
        with self.lock:
            self.stats[name] += 1

    def flaky(self, key: str) -> bool:
        """Decide whether this request fails (503) this time."""
        with self.lock:
            if self.in_a_row[key] < self.max_failures and random.random() < self.fail_rate:
                self.in_a_row[key] += 1
                return True
            self.in_a_row[key] = 0
            return False

    def once(self, service: str, key: str, make: Any) -> tuple[int, dict[str, Any]]:
        """Return the stored response of ``key``, or make, store and return a new one."""
        with self.lock:
            if key and key in self.done:
                self.stats[f"{service}.replayed"] += 1
                return 200, {**self.done[key], "idempotent_replay": True}
            response = make()
            self.stats[f"{service}.created"] += 1
            if key:
                self.done[key] = response
            return 201, response

    def confirm(self, charge: dict[str, Any], attempts: int = 60) -> None:
        """The payment provider's webhook: a signed ``payment.succeeded`` event for the charge
        (``X-Durable-Signature: t=<time>,v1=HMAC-SHA256(secret, "<t>.<body>")``), sent again
        after a failure, as providers retry theirs."""
        assert self.callback is not None
        site, secret = self.callback
        body = json.dumps({"type": "payment.succeeded", "charge": charge}).encode()
        url = f"{site.rstrip('/')}/durable/events/payment.succeeded/{charge['id']}"
        for attempt in range(attempts):
            time.sleep(0.1 if attempt == 0 else min(0.5 * attempt, 5.0))
            stamp = int(time.time())
            digest = hmac.new(secret.encode(), f"{stamp}.".encode() + body,
                              hashlib.sha256).hexdigest()
            request = Request(url, data=body, method="POST", headers={
                "Content-Type": "application/json",
                "X-Durable-Signature": f"t={stamp},v1={digest}"})
            try:
                with urlopen(request, timeout=10) as answer:
                    if answer.status == 200:
                        self.count("payments.confirmed")
                        return
            except (HTTPError, URLError, OSError):
                self.count("payments.confirm_retried")
        self.count("payments.confirm_gave_up")

    def rate_limited(self) -> float:
        """Seconds to wait before the next search is allowed (0: allowed now)."""
        with self.lock:
            now = time.monotonic()
            if now < self.next_search:
                self.stats["search.rate_limited"] += 1
                return self.next_search - now
            self.next_search = now + self.search_interval
            return 0.0

    def handle(self, method: str, path: str, query: dict[str, str], body: dict[str, Any],
               key: str) -> tuple[int, dict[str, Any], dict[str, str]]:
        """Route one request; returns status, JSON body and extra headers."""
        route = f"{method} {path}"
        if route == "GET /stats":
            with self.lock:
                return 200, dict(self.stats), {}
        if path.startswith(("/payments", "/inventory", "/shipping", "/model")) and \
                self.flaky(key or f"{route}:{json.dumps(body, sort_keys=True)}"):
            self.count(f"{path.split('/')[1]}.failed")
            return 503, {"error": "service_unavailable", "message": "try again later"}, {}
        if route == "POST /payments/charges":
            if body.get("source") == "tok_declined":
                self.count("payments.declined")
                return 402, {"error": "card_declined",
                             "message": "Your card was declined."}, {}
            status, charge = self.once("payments", key, lambda: {
                "id": f"ch_{random.getrandbits(40):010x}", "amount": body.get("amount"),
                "currency": body.get("currency", "EUR"), "status": "succeeded"})
            if status == 201 and self.callback is not None:
                threading.Thread(target=self.confirm, args=(charge,), daemon=True).start()
            return status, charge, {}
        if route == "POST /inventory/reservations":
            status, out = self.once("inventory", key, lambda: {
                "id": f"res_{random.getrandbits(32):08x}", "sku": body.get("sku"),
                "quantity": body.get("quantity", 1)})
            return status, out, {}
        if route == "POST /shipping/labels":
            status, out = self.once("shipping", key, lambda: {
                "tracking": f"TRK{random.randint(10**9, 10**10 - 1)}", "carrier": "Example Post"})
            return status, out, {}
        if route == "POST /model/complete":
            self.count("model.completions")
            if body.get("task") == "draft":
                title = str(body.get("title", "Untitled"))
                return 200, {"text": f"{title}\n\nThis draft explains {title.lower()} in three "
                             "short paragraphs, written by the stand-in model."}, {}
            return 200, plan(str(body.get("question", "")), list(body.get("observations", []))), {}
        if route == "GET /tools/search":
            wait = self.rate_limited()
            if wait:
                return 429, {"error": "rate_limited"}, {"Retry-After": str(math.ceil(wait))}
            self.count("search.answered")
            return 200, {"results": search(query.get("q", ""))}, {}
        if route == "GET /tools/read":
            page = next((p for p in CORPUS if p[0] == query.get("url")), None)
            if page is None:
                return 404, {"error": "not_found"}, {}
            return 200, {"url": page[0], "title": page[1], "text": page[2]}, {}
        if route == "GET /tools/calculate":
            try:
                return 200, {"value": calculate(query.get("expression", ""))}, {}
            except (ValueError, SyntaxError, ZeroDivisionError) as exc:
                return 400, {"error": "bad_expression", "message": str(exc)}, {}
        return 404, {"error": "no such endpoint", "route": route}, {}


def make_server(host: str, port: int, services: Services) -> ThreadingHTTPServer:
    """An HTTP server serving ``services`` on ``host:port`` (port 0: any free port)."""

    class Handler(BaseHTTPRequestHandler):
        def _serve(self, method: str) -> None:
            url = urlparse(self.path)
            query = {k: v[-1] for k, v in parse_qs(url.query).items()}
            length = int(self.headers.get("Content-Length") or 0)
            try:
                body = json.loads(self.rfile.read(length) or b"{}") if length else {}
            except json.JSONDecodeError:
                body = {}
            time.sleep(random.uniform(0.02, 0.12))  # a network round trip, roughly
            status, out, headers = services.handle(method, url.path, query, body,
                                                   self.headers.get("Idempotency-Key", ""))
            data = json.dumps(out).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for name, value in headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            self._serve("GET")

        def do_POST(self) -> None:
            self._serve("POST")

        def log_message(self, format: str, *args: Any) -> None:
            pass  # quiet; /stats tells what happened

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    return server
