"""The example durable tasks: an order pipeline, a research agent and an approval flow.

Each is written as a user of celery_durable would write it: plain functions
marked ``@step`` (checkpointed, retried alone when they fail) called from a
``@durable_task`` body (replayed from the top on every delivery, so it must
call the same steps in the same order). External services are reached
through :mod:`workflows.clients`; in the demo they are stand-ins
(:mod:`workflows.standins`) that fail now and then.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from django.core.mail import send_mail

from celery_durable import (
    PermanentError,
    RetryAfter,
    WaitTokenError,
    complete_wait_token,
    create_wait_token,
    durable_task,
    sleep,
    step,
    wait_for_event,
    wait_for_token,
)

from . import clients
from .clients import ServiceUnavailable
from .models import Document, Order

logger = logging.getLogger(__name__)

#: Celery retry options shared by the three tasks: every step that raises
#: ServiceUnavailable is retried with exponential backoff (1 s, 2 s, 4 s, with
#: jitter), up to 5 attempts; other errors fail the run at once. A step may
#: override this with its own ``@step(max_attempts=..., retry_on=...)``.
RETRY_OPTIONS: dict[str, Any] = {"autoretry_for": (ServiceUnavailable,), "max_retries": 4,
                                 "retry_backoff": 1, "retry_backoff_max": 8}


@step
def send_email(to: str, subject: str, body: str) -> int:
    """Send one e-mail (to a file in the outbox, in the demo)."""
    return send_mail(subject, body, None, [to])


# -- 1. the order pipeline ---------------------------------------------------------------


@step
def fetch_order(order_id: int) -> dict[str, Any]:
    """Read the order; its snapshot is checkpointed, so replays see the same order."""
    order = Order.objects.get(pk=order_id)
    return {"id": order.pk, "customer": order.customer, "email": order.email,
            "address": order.address, "sku": order.sku, "quantity": order.quantity,
            "amount": str(order.amount), "source": order.payment_source}


@step(max_attempts=6)
def charge_payment(order: dict[str, Any]) -> dict[str, Any]:
    """Charge the customer once, however often this step is attempted.

    ``idempotency_key`` is the same on every attempt of this step of this run
    (also after a worker crash), so the payment API returns the first charge
    to a repeated request instead of charging twice.
    """
    try:
        charge = clients.charge(amount=order["amount"], currency="EUR",
                                source=order["source"], description=f"Order #{order['id']}",
                                idempotency_key=step.context().idempotency_key)
    except clients.CardDeclined as exc:
        raise PermanentError(f"order #{order['id']}: {exc}") from exc  # no retry: dead letter
    return charge


@step(atomic=True)
def record_payment(order_id: int, charge_id: str) -> str:
    """Mark the order paid, in one database transaction with this step's checkpoint
    (``atomic=True``): the order row says PAID exactly when the run has recorded the
    payment, whatever crashes in between (docs/steps-and-replay.md)."""
    Order.objects.filter(pk=order_id).update(status=Order.Status.PAID, charge_id=charge_id)
    return charge_id


@step
def reserve_stock(order: dict[str, Any]) -> dict[str, Any]:
    """Reserve the ordered items in the warehouse."""
    return clients.reserve(sku=order["sku"], quantity=order["quantity"],
                           idempotency_key=step.context().idempotency_key)


@step
def ship(order: dict[str, Any], reservation: dict[str, Any]) -> dict[str, Any]:
    """Buy the shipping label and mark the order shipped."""
    label = clients.create_label(order_id=order["id"], address=order["address"],
                                 idempotency_key=step.context().idempotency_key)
    return {**label, "reservation": reservation["id"]}


@step(atomic=True)
def record_shipment(order_id: int, tracking: str) -> str:
    """Mark the order shipped with its tracking number, committed with this checkpoint."""
    Order.objects.filter(pk=order_id).update(status=Order.Status.SHIPPED, tracking=tracking)
    return tracking


@durable_task(**RETRY_OPTIONS)
def process_order(order_id: int, follow_up_after: float = 5.0) -> dict[str, Any]:
    """Fetch → charge → record the payment → wait for the payment's webhook → reserve →
    ship → record the shipment → e-mail; later, a follow-up e-mail.

    The two ``record_*`` steps are transactional (``atomic=True``): the order row's update
    commits with the step's checkpoint.

    ``follow_up_after`` seconds (days, in a real shop) pass in a durable
    ``sleep``: the run is SLEEPING and holds no worker meanwhile.
    """
    order = fetch_order(order_id)
    payment = charge_payment(order)
    record_payment(order_id, payment["id"])
    # The payment provider confirms the charge with a signed webhook (the stand-in calls
    # celery_durable's event endpoint): the run WAITs for it, holding no worker.
    if wait_for_event("payment.succeeded", key=payment["id"],
                      timeout=timedelta(minutes=10)) is None:
        raise PermanentError(f"order #{order_id}: payment {payment['id']} was never confirmed")
    reservation = reserve_stock(order)
    label = ship(order, reservation)
    record_shipment(order_id, label["tracking"])
    send_email(order["email"], f"Order #{order_id} is on its way",
               f"Hello {order['customer']}, we charged {order['amount']} EUR "
               f"({payment['id']}); tracking number {label['tracking']}.")
    sleep(timedelta(seconds=follow_up_after))
    send_email(order["email"], f"How was order #{order_id}?",
               "We hope you like it. Reply to this e-mail to tell us.")
    return {"order": order_id, "charge": payment["id"], "tracking": label["tracking"],
            "amount": order["amount"]}


# -- 2. the research agent ---------------------------------------------------------------


@step
def ask_model(question: str, observations: list[dict[str, Any]]) -> dict[str, Any]:
    """One "model" call: given what the tools found so far, the next tool call or the answer."""
    return clients.complete({"task": "agent", "question": question,
                             "observations": observations},
                            idempotency_key=step.context().idempotency_key)


@step(max_attempts=20)
def use_tool(name: str, arguments: dict[str, Any]) -> dict[str, Any]:
    """One tool call; when the tool is rate-limited, retry exactly when it says."""
    try:
        return clients.tool(name, arguments)
    except clients.RateLimited as exc:
        raise RetryAfter(exc.retry_after) from exc


@durable_task(**RETRY_OPTIONS)
def research(question: str, max_turns: int = 6) -> dict[str, Any]:
    """An agent loop: ask the model, run the tool it picks, repeat until it answers.

    Each model call and each tool call is its own step (``ask_model#0``,
    ``use_tool#0``, ``ask_model#1``, …): a crash or a rate limit in turn 4
    resumes in turn 4, without paying for turns 1-3 again.
    """
    observations: list[dict[str, Any]] = []
    for _ in range(max_turns):
        move = ask_model(question, observations)
        if move["type"] == "answer":
            return {"question": question, "answer": move["text"],
                    "tool_calls": [o["tool"] for o in observations]}
        output = use_tool(move["tool"], move["input"])
        observations.append({"tool": move["tool"], "input": move["input"], "output": output})
    raise PermanentError(f"no answer after {max_turns} turns")


# -- 3. the approval flow ----------------------------------------------------------------


@step
def write_draft(doc_id: int) -> str:
    """Have the model draft the document, and put it up for approval."""
    doc = Document.objects.get(pk=doc_id)
    draft = clients.complete({"task": "draft", "title": doc.title},
                             idempotency_key=step.context().idempotency_key)
    Document.objects.filter(pk=doc_id).update(body=draft["text"],
                                              status=Document.Status.AWAITING)
    return str(draft["text"])


@step
def set_document_status(doc_id: int, status: str, decided_by: str = "") -> str:
    """Record the outcome on the document."""
    Document.objects.filter(pk=doc_id).update(status=status, decided_by=decided_by)
    return status


@step
def remember_token(doc_id: int, token_id: str) -> str:
    """Keep the wait token on the document, so the approvals page can complete it."""
    Document.objects.filter(pk=doc_id).update(token_id=token_id)
    return token_id


@durable_task(**RETRY_OPTIONS)
def approval_flow(doc_id: int, reviewer: str = "editor@example.com",
                  timeout_hours: float = 72.0) -> dict[str, Any]:
    """Draft → e-mail the reviewer a link → wait for the decision → publish or reject.

    The run creates a wait token (expiring after ``timeout_hours``) and e-mails
    its URL; whoever has the link decides, once: the outbox's Approve/Reject
    buttons post to it, the approvals page and the admin complete it. While it
    waits the run is WAITING and holds no worker.
    """
    token = create_wait_token(timeout=timedelta(hours=timeout_hours), tags=["approval"])
    remember_token(doc_id, token.id)
    draft = write_draft(doc_id)
    send_email(reviewer, f"Please review document #{doc_id}",
               f"{draft}\n\nApprove or reject it here (the link works once): {token.url}")
    decision = wait_for_token(token)
    if decision is None:
        status = set_document_status(doc_id, Document.Status.EXPIRED)
    elif _approved(decision):
        status = set_document_status(doc_id, Document.Status.PUBLISHED, decision.get("by", ""))
    else:
        status = set_document_status(doc_id, Document.Status.REJECTED, decision.get("by", ""))
    return {"document": doc_id, "status": status,
            "decided_by": (decision or {}).get("by"), "reason": (decision or {}).get("reason")}


def _approved(decision: dict[str, Any]) -> bool:
    """A decision from :func:`decide` (``approved``) or an e-mail's form (``decision``)."""
    return decision.get("approved") is True or decision.get("decision") == "approve"


def decide(doc_id: int, *, approved: bool, by: str, reason: str = "") -> int:
    """Approve or reject a document: complete its run's wait token. Returns the runs resumed.

    Call it from anywhere that loads the Celery app: a view, the admin, a shell.
    A token decided already keeps the first decision (0 runs resumed).
    """
    token_id = Document.objects.filter(pk=doc_id).values_list("token_id", flat=True).first()
    if not token_id:
        logger.info("document %s has no wait token yet", doc_id)
        return 0
    try:
        done = complete_wait_token(token_id, {"approved": approved, "by": by,
                                              "reason": reason})
    except WaitTokenError as exc:
        logger.info("document %s: %s", doc_id, exc)
        return 0
    logger.info("document %s %s by %s (%d run resumed)", doc_id,
                "approved" if approved else "rejected", by, done.resumed)
    return done.resumed if done.first else 0


__all__ = ["approval_flow", "decide", "process_order", "research"]
