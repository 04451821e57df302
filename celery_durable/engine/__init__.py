"""The engine: one delivery of a durable run, from its lease to its end.

* :mod:`.runner`: a delivery: take the lease, replay, run the body, then park,
  retry or finish;
* :mod:`.steps`: ``@step`` and the replay of recorded steps;
* :mod:`.context`: what a delivery knows (``RunContext``, ``StepContext``);
* :mod:`.leases`: the heartbeat that renews the leases a process holds;
* :mod:`.storeguard`: a store outage is ``StoreUnavailableError``, never a step failure;
* :mod:`.publish`: sending a run's message again;
* :mod:`.lifecycle`: what follows a run's end wherever it happens (notify the
  parent, announce a dead letter, record REVOKED);
* :mod:`.tracing`, :mod:`.events`, :mod:`.steplogs`: what a delivery reports
  (OpenTelemetry spans, step events for Flower, log lines per step);
* :mod:`._flow`: the ``BaseException`` signals that unwind a body.

The task class that hands deliveries to the runner is :mod:`celery_durable.task`.
Internal: import what you need from :mod:`celery_durable`.
"""
