"""MySQL/MariaDB: the run list's indexes in ascending order (no change elsewhere).

The model declares ``-created_at`` (newest first), which PostgreSQL serves from a
descending index. MariaDB (10.11) does not use a descending key part for ``MIN``/``MAX``
or for a loose index scan, so the admin's date hierarchy, its task filter and the dead
letters' date range each read the whole index (0.3-2 s at 1,000,000 runs,
``bench/admin_changelist.py --database mariadb``). An ascending index serves those, and
``ORDER BY created_at DESC`` too (read backwards). The dead letters' index leads with
``status`` there: MySQL has no partial index (``WHERE status = 'FAILED'``).
"""

from __future__ import annotations

from typing import Any

from django.db import migrations

#: (table, index, columns in ascending order)
ASCENDING = [
    ("celery_durable_run", "cd_run_created_idx", "created_at, id"),
    ("celery_durable_run", "cd_run_status_idx", "status, created_at"),
    ("celery_durable_run", "cd_run_task_idx", "task, created_at"),
    ("celery_durable_run", "cd_run_failed_idx", "status, finished_at, id"),
    ("celery_durable_run", "cd_run_version_idx", "version, created_at"),
    ("celery_durable_run_tag", "cd_tag_created_idx", "tag, created_at"),
]


def _ascending(apps: Any, schema_editor: Any) -> None:
    if schema_editor.connection.vendor != "mysql":
        return
    q = schema_editor.connection.ops.quote_name
    for table in dict.fromkeys(t for t, _, _ in ASCENDING):
        changes = [f"DROP INDEX {q(name)}, ADD INDEX {q(name)} "
                   f"({', '.join(q(c.strip()) for c in columns.split(','))})"
                   for t, name, columns in ASCENDING if t == table]
        schema_editor.execute(f"ALTER TABLE {q(table)} {', '.join(changes)}")


class Migration(migrations.Migration):
    atomic = False  # MySQL runs DDL outside transactions
    dependencies = [
        ("celery_durable", "0008_run_history"),
    ]

    operations = [
        migrations.RunPython(_ascending, migrations.RunPython.noop, elidable=False),
    ]
