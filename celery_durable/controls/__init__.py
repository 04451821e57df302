"""Run controls: what a body calls besides steps, and what is called around runs.

* :mod:`.waits`: ``sleep``, ``sleep_until``, ``wait_for_event``, ``send_event``,
  ``wake_run``;
* :mod:`.children`: child runs (``call``, ``gather``, ``map``);
* :mod:`.concurrency`: ``@durable_task(concurrency=N, concurrency_key=fn)``;
* :mod:`.idempotency`: ``apply_async(idempotency_key=...)``;
* :mod:`.cancel`: ``cancel_run``;
* :mod:`.deterministic`: ``now()``, ``uuid4()``, ``random()``.

Internal: import what you need from :mod:`celery_durable`.
"""
