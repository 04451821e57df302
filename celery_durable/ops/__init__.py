"""Operating runs: inspecting them, the sweeper, retention, the CLI and observability.

* :mod:`.inspection`: ``get_run``, ``list_runs``, ``retry_run``;
* :mod:`.sweeper`: recovers runs whose lease expired and publishes due ones;
* :mod:`.periodic`: the same sweep (and the purge) as Celery beat tasks;
* :mod:`.retention`: ``purge_runs`` and the purge of runs past their retention;
* :mod:`.cli`: ``celery -A proj durable ...``;
* :mod:`.tracing`: OpenTelemetry spans; :mod:`.events`: step events for Flower;
  :mod:`.steplogs`: log lines per step.

Internal: import what you need from :mod:`celery_durable` (the beat tasks'
module, ``celery_durable.ops.periodic``, is named in ``app.conf.include``).
"""
