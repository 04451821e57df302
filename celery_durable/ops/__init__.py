"""Operating runs: inspecting them, the sweeper, retention and the CLI.

* :mod:`.inspection`: ``get_run``, ``list_runs``, ``retry_run``;
* :mod:`.sweeper`: recovers runs whose lease expired and publishes due ones;
* :mod:`.periodic`: the same sweep (and the purge) as Celery beat tasks;
* :mod:`.retention`: ``purge_runs`` and the purge of runs past their retention;
* :mod:`.cli`: ``celery -A proj durable ...``.

Internal: import what you need from :mod:`celery_durable` (the beat tasks'
module, ``celery_durable.ops.periodic``, is named in ``app.conf.include``).
"""
