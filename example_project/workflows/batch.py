"""A batch of example runs: orders, research questions and documents to approve.

Used by the demo (``scripts/demo``) and by ``python manage.py submit_examples``.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from decimal import Decimal

from django.conf import settings

from .models import Document, Order
from .tasks import approval_flow, process_order, research

CUSTOMERS = [("Ada", "Analytical Lane 1, London"), ("Grace", "Compiler Road 7, Arlington"),
             ("Linus", "Kernel Street 2, Helsinki"), ("Barbara", "Abstraction Ave 5, Boston"),
             ("Guido", "Indent Square 3, Amsterdam"), ("Margaret", "Apollo Drive 11, Houston")]
PRODUCTS = [("mug", Decimal("12.50")), ("hoodie", Decimal("49.00")),
            ("stickers", Decimal("4.99")), ("notebook", Decimal("9.90"))]
QUESTIONS = ["Why should a payment call carry an idempotency key?",
             "What does durable execution do when a worker crashes?",
             "How should a client react to a 429 rate limit?",
             "How much memory do 10000 queued messages take in Redis, times 3 queues?"]
TITLES = ["Release notes for version 2.0", "Incident report: the Tuesday outage",
          "Onboarding guide for new engineers"]


@dataclass(frozen=True)
class Submitted:
    """One submitted run: what it is, its run id (= Celery task id) and what to expect."""

    kind: str        # "order", "research" or "approval"
    run_id: str
    label: str       # e.g. "order #12 (Ada, 12.50 EUR)"
    expect: str      # the final run status the demo expects: SUCCEEDED, FAILED or WAITING
    object_id: int | None = None


def order(*, declined: bool = False, follow_up_after: float = 5.0) -> Submitted:
    """Create an order and start ``process_order`` for it."""
    name, address = random.choice(CUSTOMERS)
    sku, price = random.choice(PRODUCTS)
    quantity = random.randint(1, 3)
    row = Order.objects.create(customer=name, email=f"{name.lower()}@example.com",
                               address=address, sku=sku, quantity=quantity,
                               amount=price * quantity,
                               payment_source="tok_declined" if declined else "tok_visa")
    result = process_order.delay(row.pk, follow_up_after=follow_up_after)
    return Submitted("order", result.id, str(row) + (" — card declined" if declined else ""),
                     "FAILED" if declined else "SUCCEEDED", row.pk)


def question(text: str) -> Submitted:
    """Start the research agent on ``text``."""
    result = research.delay(text)
    return Submitted("research", result.id, text, "SUCCEEDED")


def document(title: str, *, will_be_approved: bool,
             timeout_hours: float | None = None) -> Submitted:
    """Create a document and start its approval flow.

    The flow waits ``timeout_hours`` for a decision (default: the
    ``APPROVAL_TIMEOUT_HOURS`` setting, env ``DEMO_APPROVAL_TIMEOUT_HOURS``, 72).
    """
    doc = Document.objects.create(title=title)
    hours = settings.APPROVAL_TIMEOUT_HOURS if timeout_hours is None else timeout_hours
    result = approval_flow.delay(doc.pk, timeout_hours=hours)
    Document.objects.filter(pk=doc.pk).update(run_id=result.id)
    return Submitted("approval", result.id, f"document #{doc.pk}: {title}",
                     "SUCCEEDED" if will_be_approved else "WAITING", doc.pk)


def submit(runs: int = 12, *, follow_up_after: float = 5.0) -> list[Submitted]:
    """Submit ``runs`` runs (at least 3).

    One order has a card that is declined (it ends FAILED, in the dead-letter
    view), two documents go up for approval (the caller approves the first
    one; the second stays WAITING for you), and the rest are orders and
    research questions, two to one, that retry through the stand-ins'
    failures and succeed.
    """
    runs = max(runs, 3)
    out = [order(declined=True, follow_up_after=follow_up_after),
           document(TITLES[0], will_be_approved=True),
           document(TITLES[1], will_be_approved=False)]
    for i in range(runs - 3):
        if i % 3 == 2:
            out.append(question(QUESTIONS[(i // 3) % len(QUESTIONS)]))
        else:
            out.append(order(follow_up_after=follow_up_after))
    return out
