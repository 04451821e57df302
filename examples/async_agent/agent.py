"""An agent that calls three tools at once: an ``async def`` durable task (docs/async.md).

Each tool call is an async step (checkpointed, retried alone); ``asyncio.gather`` runs the
three together, so the run waits for the slowest tool, not for the sum of them. The tools
are HTTP endpoints (``TOOLS_URL``; ``standin.py`` serves stand-ins) reached with
``httpx.AsyncClient``.

    python standin.py &                        # the stand-in tools on 127.0.0.1:8766
    celery -A agent worker -l INFO             # a worker (any pool)
    python -c "import agent; print(agent.research.delay('celery', 'Lisbon', 'ACME').get())"
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

import httpx
from celery import Celery

from celery_durable import durable_task, step

REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379").rstrip("/")
TOOLS_URL = os.environ.get("TOOLS_URL", "http://127.0.0.1:8766").rstrip("/")

app = Celery("agent", broker=f"{REDIS_URL}/0", backend=f"{REDIS_URL}/1")
app.conf.update(durable_lease_ttl=10, worker_hijack_root_logger=False)


async def _tool(name: str, **params: Any) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=TOOLS_URL, timeout=10) as client:
        answer = await client.get(f"/{name}", params=params,
                                  headers={"Idempotency-Key": step.context().idempotency_key})
        answer.raise_for_status()
        return dict(answer.json())


@step(max_attempts=4, retry_on=(httpx.TransportError, httpx.HTTPStatusError))
async def search(query: str) -> dict[str, Any]:
    """Web search (a tool)."""
    return await _tool("search", q=query)


@step(max_attempts=4, retry_on=(httpx.TransportError, httpx.HTTPStatusError))
async def weather(city: str) -> dict[str, Any]:
    """The weather in ``city`` (a tool)."""
    return await _tool("weather", city=city)


@step(max_attempts=4, retry_on=(httpx.TransportError, httpx.HTTPStatusError))
async def stock(symbol: str) -> dict[str, Any]:
    """A stock quote (a tool)."""
    return await _tool("stock", symbol=symbol)


@step
def summarise(found: list[dict[str, Any]]) -> str:
    """Turn the tools' answers into the agent's reply (a model call, in a real agent)."""
    return "; ".join(f"{part['tool']}: {part['answer']}" for part in found)


@durable_task(app=app, max_parallel_steps=8)
async def research(query: str, city: str, symbol: str) -> str:
    """Call the three tools at once, then summarise."""
    found = await asyncio.gather(search(query), weather(city), stock(symbol))
    return summarise(list(found))
