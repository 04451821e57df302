"""One order task in two code versions, chosen by ``VERSIONS_CODE`` (``v1``, ``v2``).

The version is also the app's ``durable_version``; ``VERSIONS_PIN=1`` turns
on ``durable_pin_version``. Each step counts its executions in Redis
(``{tag}:{step}``) and records the worker that ran it (``{tag}:ran_by``,
step -> ``VERSIONS_WORKER``), so tests read both from outside the worker.

v1 (in production since an earlier patch ``audit``)::

    charge; if patched("audit"): audit; notify; wait_for_event("packed"); ship

v2 inserts a fraud check behind ``patched("fraud")``, removes ``notify`` for
new runs behind ``patched("drop-notify")``, and retires the ``audit`` patch
with ``deprecate_patch``::

    charge; deprecate_patch("audit"); audit; if patched("fraud"): fraud;
    if not patched("drop-notify"): notify; wait_for_event("packed"); ship
"""

from __future__ import annotations

import os

from apps.common import counters, make_app
from celery_durable import deprecate_patch, durable_task, patched, step, wait_for_event

CODE = os.environ.get("VERSIONS_CODE", "v1")
app = make_app("versions_app", durable_version=CODE,
               durable_pin_version=os.environ.get("VERSIONS_PIN") == "1")
r = counters()


def _ran(tag: str, name: str) -> str:
    r.incr(f"{tag}:{name}")
    r.hset(f"{tag}:ran_by", name, os.environ.get("VERSIONS_WORKER", "?"))
    return name


@step
def charge(tag: str) -> str:
    """Charge the card."""
    return _ran(tag, "charge")


@step
def audit(tag: str) -> str:
    """The audit added by the earlier patch."""
    return _ran(tag, "audit")


@step
def fraud(tag: str) -> str:
    """v2's fraud check."""
    return _ran(tag, "fraud")


@step
def notify(tag: str) -> str:
    """v1's notification (v2 drops it for new runs)."""
    return _ran(tag, "notify")


@step
def ship(tag: str) -> str:
    """Ship the order."""
    return _ran(tag, "ship")


def _order_v1(tag: str) -> list[str]:
    done = [charge(tag)]
    if patched("audit"):
        done.append(audit(tag))
    done.append(notify(tag))
    wait_for_event("packed", key=tag)
    return [*done, ship(tag)]


def _order_v2(tag: str) -> list[str]:
    done = [charge(tag)]
    deprecate_patch("audit")
    done.append(audit(tag))
    if patched("fraud"):
        done.append(fraud(tag))
    if not patched("drop-notify"):
        done.append(notify(tag))
    wait_for_event("packed", key=tag)
    return [*done, ship(tag)]


@durable_task(app=app, name="versions.order")
def order(tag: str) -> list[str]:
    """The order pipeline of this code version; returns the steps it went through."""
    return _order_v2(tag) if CODE == "v2" else _order_v1(tag)
