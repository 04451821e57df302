"""The example's own data: shop orders and documents awaiting approval."""

from __future__ import annotations

from django.db import models


class Order(models.Model):
    """A shop order, processed by :func:`workflows.tasks.process_order`."""

    class Status(models.TextChoices):
        NEW = "new"
        PAID = "paid"
        SHIPPED = "shipped"

    customer = models.CharField(max_length=100)
    email = models.EmailField()
    address = models.CharField(max_length=200)
    sku = models.CharField(max_length=40)
    quantity = models.PositiveIntegerField(default=1)
    amount = models.DecimalField(max_digits=10, decimal_places=2)
    #: The payment method's token; ``tok_declined`` is a card the payment API refuses.
    payment_source = models.CharField(max_length=40, default="tok_visa")
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.NEW)
    charge_id = models.CharField(max_length=40, blank=True)
    tracking = models.CharField(max_length=40, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"order #{self.pk} ({self.customer}, {self.amount} EUR)"


class Document(models.Model):
    """A document that is drafted, then published only once someone approves it."""

    class Status(models.TextChoices):
        DRAFT = "draft"
        AWAITING = "awaiting approval", "Awaiting approval"
        PUBLISHED = "published"
        REJECTED = "rejected"
        EXPIRED = "expired"

    title = models.CharField(max_length=200)
    body = models.TextField(blank=True)
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.DRAFT)
    decided_by = models.CharField(max_length=100, blank=True)
    #: The durable run that drafts and publishes this document.
    run_id = models.CharField(max_length=255, blank=True)
    #: The wait token the run waits on for the decision (``create_wait_token``).
    token_id = models.CharField(max_length=255, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return self.title
