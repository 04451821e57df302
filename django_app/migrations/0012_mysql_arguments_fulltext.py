"""MySQL/MariaDB: a FULLTEXT index over the runs' arguments (no change elsewhere).

The admin's search in the arguments (``args``/``kwargs`` ``LIKE '%…%'``) reads every row;
MariaDB scans with one thread (3.5 s at 1,000,000 runs, ``bench/admin_changelist.py
--database mariadb``). With this index the admin first narrows the rows by the whole words
that every match must hold (``MATCH … AGAINST`` in boolean mode), then applies the same
``LIKE`` as before (``celery_durable_django.admin.mysql_search.fulltext_query``).

Adding it rebuilds the table once on InnoDB (it adds the hidden ``FTS_DOC_ID`` column):
about a minute per million runs. PostgreSQL and SQLite: nothing happens.
"""

from __future__ import annotations

from typing import Any

from django.db import migrations

TABLE = "celery_durable_run"
#: The index's name (the admin looks for it before using ``MATCH``).
INDEX = "cd_run_args_ft"


def _add(apps: Any, schema_editor: Any) -> None:
    if schema_editor.connection.vendor != "mysql":
        return
    q = schema_editor.connection.ops.quote_name
    schema_editor.execute(
        f"ALTER TABLE {q(TABLE)} ADD FULLTEXT INDEX {q(INDEX)} ({q('args')}, {q('kwargs')})")


def _drop(apps: Any, schema_editor: Any) -> None:
    if schema_editor.connection.vendor != "mysql":
        return
    q = schema_editor.connection.ops.quote_name
    schema_editor.execute(f"ALTER TABLE {q(TABLE)} DROP INDEX {q(INDEX)}")


class Migration(migrations.Migration):
    atomic = False  # MySQL runs DDL outside transactions
    dependencies = [
        ("celery_durable", "0011_step_atomic"),
    ]

    operations = [
        migrations.RunPython(_add, _drop, elidable=False),
    ]
