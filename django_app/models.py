"""Durable runs and their step checkpoints, as rows in the Django database.

Times a human reads (created, started, finished, updated) are
``DateTimeField``\\s, so the admin can filter and build a date hierarchy on
them. Times the engine compares (lease expiry, not-before, due, retention)
and step start/finish times are epoch seconds (``FloatField``), exactly the
floats of :class:`celery_durable.records.RunRecord`, so leases and the
sweeper's due query are plain numeric comparisons on every database.

No setting changes this schema: field sizes, the primary key types and the
index names are all fixed here. Statuses are plain strings (the values of
:class:`~celery_durable.records.RunStatus` and ``StepStatus``) without
``choices``, so a new status in the engine needs no migration.
"""

from __future__ import annotations

from django.db import models
from django.db.models import Q

from celery_durable.records import RunStatus


class Run(models.Model):
    """One durable run; its id is the Celery task id."""

    id = models.CharField("run id", max_length=255, primary_key=True)
    task = models.CharField(max_length=255)
    status = models.CharField(max_length=16, default=RunStatus.PENDING.value)
    args = models.TextField("arguments", default="[]")
    kwargs = models.TextField("keyword arguments", default="{}")
    options = models.JSONField(default=dict, blank=True,
                               help_text="routing of the run's message (exchange, routing key, "
                                         "priority)")
    result = models.TextField(null=True, blank=True)
    created_at = models.DateTimeField("created")
    updated_at = models.DateTimeField("updated")
    started_at = models.DateTimeField("started", null=True, blank=True)
    finished_at = models.DateTimeField("finished", null=True, blank=True)
    # The lease: a fencing token incremented by every new holder.
    token = models.BigIntegerField(default=0)
    owner = models.CharField(max_length=255, default="", blank=True)
    lease_expires = models.FloatField(null=True, blank=True)
    not_before = models.FloatField(null=True, blank=True)
    due_at = models.FloatField(null=True, blank=True)
    expires_at = models.FloatField(null=True, blank=True,
                                   help_text="a finished run is purged after this time")
    recoveries = models.IntegerField(default=0)
    error_type = models.CharField(max_length=255, default="", blank=True)
    error_message = models.TextField(default="", blank=True)
    error_traceback = models.TextField(default="", blank=True)
    failed_step = models.CharField(max_length=255, null=True, blank=True)
    idempotency_key = models.CharField(max_length=255, null=True, blank=True)
    # Denormalised for the changelist: the step last written and its attempts.
    current_step = models.CharField(max_length=255, default="", blank=True)
    attempts = models.IntegerField(default=0)
    # The current (SLEEPING/WAITING) or most recent durable wait.
    wait_kind = models.CharField(max_length=16, default="", blank=True,
                                 help_text="sleep or event; empty: never waited")
    wait_step = models.CharField(max_length=255, default="", blank=True)
    wait_position = models.IntegerField(default=0)
    wait_id = models.BigIntegerField(default=0)
    wait_until = models.FloatField(null=True, blank=True)
    wait_event = models.CharField(max_length=255, null=True, blank=True)
    wait_key = models.CharField(max_length=255, null=True, blank=True)
    wait_after = models.BigIntegerField(default=0)
    wait_resolution = models.TextField(null=True, blank=True)
    # Run controls: the run that started this one (call/gather/map); how many times its
    # children reported that they finished, and the count its children wait resumes at.
    parent = models.CharField("parent run", max_length=255, null=True, blank=True)
    children_done = models.IntegerField(default=0)
    children_needed = models.IntegerField(default=0)
    # The operator's record (RunHistory): labels and code version given at the start
    # (the tags are also RunTag rows, the index a tag filter uses), what the run reported
    # with set_metadata, its step retries, and its replay links.
    tags = models.JSONField(default=list, blank=True)
    version = models.CharField("code version", max_length=255, null=True, blank=True)
    metadata = models.JSONField(default=dict, blank=True)
    retries = models.IntegerField(default=0)
    retrying = models.TextField(default="", blank=True,
                                help_text="the retry a RETRYING run waits for (JSON)")
    replay_of = models.CharField("replays", max_length=255, null=True, blank=True)
    replayed_as = models.JSONField(default=list, blank=True)

    class Meta:
        db_table = "celery_durable_run"
        verbose_name = "run"
        verbose_name_plural = "runs"
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(fields=["-created_at", "-id"], name="cd_run_created_idx"),
            models.Index(fields=["status", "-created_at"], name="cd_run_status_idx"),
            models.Index(fields=["task", "-created_at"], name="cd_run_task_idx"),
            models.Index(fields=["-finished_at", "-id"], name="cd_run_failed_idx",
                         condition=Q(status="FAILED")),
            models.Index(fields=["idempotency_key"], name="cd_run_ikey_idx",
                         condition=Q(idempotency_key__isnull=False)),
            models.Index(fields=["due_at"], name="cd_run_due_idx",
                         condition=Q(due_at__isnull=False)),
            models.Index(fields=["expires_at"], name="cd_run_expires_idx",
                         condition=Q(expires_at__isnull=False)),
            models.Index(fields=["parent"], name="cd_run_parent_idx",
                         condition=Q(parent__isnull=False)),
            models.Index(fields=["version", "-created_at"], name="cd_run_version_idx",
                         condition=Q(version__isnull=False)),
        ]
        permissions = [
            ("retry_run", "Can retry a run from its failed step"),
            ("restart_run", "Can restart a run from scratch"),
            ("retry_run_with_arguments", "Can retry a run with edited arguments"),
            ("cancel_run", "Can cancel a run"),
            ("wake_run", "Can wake a sleeping or waiting run now"),
            ("send_event", "Can send the event a waiting run awaits"),
        ]

    def __str__(self) -> str:
        return f"{self.task}[{self.id}]"


class DeadLetter(Run):
    """A second view over runs: those that failed for good (the dead-letter queue)."""

    class Meta:
        proxy = True
        verbose_name = "dead letter"
        verbose_name_plural = "dead letters"
        default_permissions = ()


class Step(models.Model):
    """The checkpoint of one step call at one position of a run."""

    # No separate index on run: the (run, position) unique constraint serves run lookups.
    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="steps", db_index=False)
    position = models.IntegerField()
    key = models.CharField(max_length=255)
    name = models.CharField(max_length=255)
    status = models.CharField(max_length=16)
    attempts = models.IntegerField(default=1)
    value = models.TextField(null=True, blank=True)
    error_type = models.CharField(max_length=255, default="", blank=True)
    error_message = models.TextField(default="", blank=True)
    error_traceback = models.TextField(default="", blank=True)
    #: The failed step's last log lines (``durable_step_log_lines``), a JSON list.
    error_logs = models.TextField(default="", blank=True)
    started_at = models.FloatField(null=True, blank=True)
    finished_at = models.FloatField(null=True, blank=True)
    #: A transactional step (``atomic=True``): its writes committed with this checkpoint.
    atomic = models.BooleanField(default=False)

    class Meta:
        db_table = "celery_durable_step"
        verbose_name = "step checkpoint"
        verbose_name_plural = "step checkpoints"
        ordering = ["run", "position"]
        constraints = [
            models.UniqueConstraint(fields=["run", "position"], name="cd_step_run_position_uniq"),
        ]

    def __str__(self) -> str:
        return f"{self.run_id} #{self.position} {self.key}"


class RunTag(models.Model):
    """One tag of a run: the index ``list_runs(tag=...)`` and the admin's tag filter use."""

    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="tag_rows",
                            db_index=False)
    tag = models.CharField(max_length=255)
    created_at = models.DateTimeField("created")

    class Meta:
        db_table = "celery_durable_run_tag"
        constraints = [
            models.UniqueConstraint(fields=["run", "tag"], name="cd_tag_run_tag_uniq"),
        ]
        indexes = [models.Index(fields=["tag", "-created_at"], name="cd_tag_created_idx")]

    def __str__(self) -> str:
        return f"{self.run_id} {self.tag}"


class HistoryRow(models.Model):
    """One entry of a run's history (a failed attempt, a recovery, a retry, a cancel, a wake).

    ``entry`` is :meth:`celery_durable.records.HistoryEntry.to_json`; ``kind`` and
    ``at`` (the database's clock) are copied out of it for queries.
    """

    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="history_rows",
                            db_index=False)
    kind = models.CharField(max_length=16)
    at = models.FloatField()
    entry = models.TextField()

    class Meta:
        db_table = "celery_durable_history"
        verbose_name = "history entry"
        verbose_name_plural = "history entries"
        indexes = [models.Index(fields=["run", "id"], name="cd_history_run_idx")]

    def __str__(self) -> str:
        return f"{self.run_id} {self.kind}"


class Mailbox(models.Model):
    """The mailbox of one event name and key: its row lock orders senders and waiters."""

    name = models.CharField(max_length=255)
    key = models.CharField(max_length=255)
    last_seq = models.BigIntegerField(default=0)

    class Meta:
        db_table = "celery_durable_mailbox"
        verbose_name = "event mailbox"
        verbose_name_plural = "event mailboxes"
        constraints = [
            models.UniqueConstraint(fields=["name", "key"], name="cd_mailbox_name_key_uniq"),
        ]

    def __str__(self) -> str:
        return f"{self.name}[{self.key}]"


class Event(models.Model):
    """An event sent with ``send_event``, kept in its mailbox for the buffer window."""

    mailbox = models.ForeignKey(Mailbox, on_delete=models.CASCADE, related_name="events",
                                db_index=False)
    seq = models.BigIntegerField()
    event_id = models.CharField(max_length=64)
    payload = models.TextField()
    sent_at = models.FloatField()

    class Meta:
        db_table = "celery_durable_event"
        constraints = [
            models.UniqueConstraint(fields=["mailbox", "seq"], name="cd_event_mailbox_seq_uniq"),
        ]

    def __str__(self) -> str:
        return f"{self.mailbox_id} #{self.seq}"


class Waiter(models.Model):
    """A run waiting (or about to wait) for the events of a mailbox; no FK: runs come and go."""

    mailbox = models.ForeignKey(Mailbox, on_delete=models.CASCADE, related_name="waiters",
                                db_index=False)
    run_id = models.CharField(max_length=255)

    class Meta:
        db_table = "celery_durable_waiter"
        constraints = [
            models.UniqueConstraint(fields=["mailbox", "run_id"], name="cd_waiter_uniq"),
        ]

    def __str__(self) -> str:
        return f"{self.run_id} waits on {self.mailbox_id}"


class IdempotencyKey(models.Model):
    """An idempotency key of a task, bound to the run it started until ``expires_at``."""

    task = models.CharField(max_length=255)
    key = models.CharField(max_length=255)
    run_id = models.CharField(max_length=255)
    expires_at = models.FloatField()

    class Meta:
        db_table = "celery_durable_idempotency_key"
        constraints = [
            models.UniqueConstraint(fields=["task", "key"], name="cd_ikey_task_key_uniq"),
        ]
        indexes = [models.Index(fields=["expires_at"], name="cd_ikey_expires_idx")]

    def __str__(self) -> str:
        return f"{self.task}[{self.key}] -> {self.run_id}"


class ConcurrencyGroup(models.Model):
    """A concurrency group (task, or task and key): its row lock orders slot changes."""

    name = models.CharField(max_length=255, unique=True)

    class Meta:
        db_table = "celery_durable_concurrency_group"

    def __str__(self) -> str:
        return self.name


class ConcurrencySlot(models.Model):
    """A run holding a slot of a group (``queued`` False) or waiting for one, FIFO by ``seq``."""

    group = models.ForeignKey(ConcurrencyGroup, on_delete=models.CASCADE, related_name="slots",
                              db_index=False)
    run_id = models.CharField(max_length=255)
    queued = models.BooleanField(default=False)
    seq = models.FloatField(default=0)
    expires_at = models.FloatField()

    class Meta:
        db_table = "celery_durable_concurrency_slot"
        constraints = [
            models.UniqueConstraint(fields=["group", "run_id"], name="cd_slot_group_run_uniq"),
        ]

    def __str__(self) -> str:
        return f"{self.run_id} in {self.group_id}"


class WaitToken(models.Model):
    """A wait token a run created (``create_wait_token``): pending, completed or expired.

    Times are the database's clock, in epoch seconds; ``payload`` is the first
    completion's payload (serialized), kept for the admin and for an answer to a
    second completion.
    """

    id = models.CharField(primary_key=True, max_length=255)
    run_id = models.CharField(max_length=255)
    created_at = models.FloatField()
    expires_at = models.FloatField(null=True, blank=True)
    completed_at = models.FloatField(null=True, blank=True)
    payload = models.TextField(null=True, blank=True)
    tags = models.JSONField(default=list)

    class Meta:
        db_table = "celery_durable_wait_token"
        verbose_name = "wait token"
        verbose_name_plural = "wait tokens"
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["created_at"], name="cd_token_created_idx"),
                   models.Index(fields=["run_id", "created_at"], name="cd_token_run_idx")]
        default_permissions = ("view",)
        permissions = [("complete_wait_token", "Can complete a wait token with a payload")]

    def __str__(self) -> str:
        return self.id
