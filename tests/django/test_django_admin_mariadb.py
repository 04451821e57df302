"""The admin's search in the arguments on MariaDB: through the FULLTEXT index of migration
0012, then the same ``LIKE`` as elsewhere; it finds what reading every row finds.

Runs on the shared ``mariadb`` database: each test writes rows under a word of its own and
deletes only those, so tests running beside it are not disturbed.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from django_support import require_mariadb, setup


def _words(text: str) -> list[str]:
    """The boolean-mode terms for ``text`` under InnoDB's default word lengths (3 to 84)."""
    setup()
    from celery_durable_django.admin.mysql_search import FullText, fulltext_words

    return fulltext_words(text, FullText(min_size=3, max_size=84))


@pytest.mark.parametrize(("text", "terms"), [
    ("order-123456", ["+123456*"]),  # the first word may end a longer word: no term
    ("123456", []),  # a word alone may be the middle of one
    ("-order-12-abc", ["+order", "+abc*"]),  # "12": shorter than InnoDB indexes
    ("bob@example.com", ["+example"]),  # "com": a stopword, not indexed
    ("x-wher", []),  # "wher*": would miss "where", a stopword
    ("x-a_b_c-y", ["+a_b_c"]),  # the underscore is part of a word
    ("a-" + "b" * 85 + "-c", []),  # longer than InnoDB indexes
    ("x-été", []),  # not ASCII: InnoDB's classes of those characters are not checked
    ("x-THE-Order", ["+order*"]),
])
def test_the_words_a_search_looks_up_are_words_every_match_holds(text, terms):
    """Only words that every row containing the text has whole (or, last, as a start)."""
    assert _words(text) == terms


@pytest.fixture
def maria(monkeypatch) -> Iterator[str]:
    """A word unique to this test; its runs on ``mariadb`` are deleted afterwards. The index
    is tried at once: in a table this small, reading the rows always finds a page in time."""
    setup()
    require_mariadb()
    from celery_durable_django.admin.runs import RunAdmin
    from celery_durable_django.models import Run

    monkeypatch.setattr(RunAdmin, "scan_probe_seconds", 0)

    word = f"zq{uuid.uuid4().hex[:10]}"
    yield word
    Run.objects.using("mariadb").filter(args__contains=word).delete()
    Run.objects.using("mariadb").filter(kwargs__contains=word).delete()


def _runs(word: str, texts: dict[str, tuple[str, str]]) -> None:
    from django.utils import timezone

    from celery_durable_django.models import Run

    now = timezone.now()
    Run.objects.using("mariadb").bulk_create([
        Run(id=f"{word}-{name}", task="shop.tasks.search", args=args, kwargs=kwargs,
            options={}, status="SUCCEEDED", created_at=now - dt.timedelta(seconds=i),
            updated_at=now)
        for i, (name, (args, kwargs)) in enumerate(texts.items())])


def _search(term: str, *, rows: bool = False) -> tuple[set[str], list[str], list[str]]:
    """The run ids the admin's search finds on ``mariadb``, the SQL it ran and its
    messages (``rows``: the "every run, row by row" choice)."""
    from django.contrib.admin.sites import site
    from django.contrib.messages.storage.cookie import CookieStorage
    from django.db import connections
    from django.test import RequestFactory
    from django.test.utils import CaptureQueriesContext

    from celery_durable_django.models import Run

    request: Any = RequestFactory().get("/", {"q": term, **({"search_rows": "1"} if rows
                                                            else {})})
    request._messages = CookieStorage(request)
    admin = site._registry[Run]
    with CaptureQueriesContext(connections["mariadb"]) as captured:
        found, _ = admin.get_search_results(request, Run.objects.using("mariadb"), term)
        ids = set(found.values_list("id", flat=True))
    return ids, [q["sql"] for q in captured.captured_queries], [str(m) for m in
                                                                  request._messages]


def test_a_search_through_the_fulltext_index_finds_what_every_row_finds(maria):
    """For each search, the runs found through the index are the runs found by reading every
    row, and the index was used where the search has a word to look up."""
    w = maria
    _runs(w, {
        "a": (f'[1, "order-{w}77"]', "{}"),
        "b": (f'["x-order-{w}7-y"]', "{}"),
        "c": ("[]", f'{{"ref": "ORDER-{w}"}}'),  # in the keyword arguments, other case
        "d": (f'["order{w}"]', "{}"),  # no word boundary before the value
        "e": (f'["bob@{w}.example.com", "o\'brien"]', "{}"),
        "f": (f'["{w}", "the end"]', "{}"),
    })
    expected = {
        f"order-{w}": {"a", "b", "c"},
        f"-{w}7-": {"b"},
        f"{w}": {"a", "b", "c", "d", "e", "f"},  # no word to look up: every row is read
        f'"order-{w}7"': {"a", "b"},
        f"order-{w} x-order": {"b"},
        f"bob@{w}.example.com": {"e"},
        f"{w}.example": {"e"},
        f"{w}.exam": {"e"},
        f"order-{w}8": set(),
    }
    for term, names in expected.items():
        found, sql, notes = _search(term)
        by_rows, rows_sql, _ = _search(term, rows=True)
        want = {f"{w}-{n}" for n in names}
        assert found == by_rows == want, term
        assert not any("MATCH(" in q for q in rows_sql)
        indexed = any("MATCH(" in q for q in sql)
        assert indexed == bool(_words(term.strip('"'))), (term, sql)
        assert indexed == any("full-text index" in n for n in notes), notes


def test_a_word_longer_than_the_index_keeps_is_found_row_by_row(maria):
    """The one case the page's message names: the search ends with the start of a word
    longer than InnoDB indexes (84 characters); "every run, row by row" finds it."""
    w = maria
    _runs(w, {"long": (f'["tok-{w}{"a" * 90}"]', "{}")})
    assert _search(f"tok-{w}")[0] == set()
    assert _search(f"tok-{w}", rows=True)[0] == {f"{w}-long"}
    assert _search(f"{w}")[0] == {f"{w}-long"}  # no word to look up: every row is read


def test_the_index_is_not_used_where_reading_rows_is_cheaper_or_it_gives_many(
        maria, monkeypatch):
    """Reading the newest rows finds a page within ``scan_probe_seconds``: no index. The
    index gives more than ``fulltext_rows`` runs: no index either. Both find the same."""
    from celery_durable_django.admin.runs import RunAdmin

    w = maria
    _runs(w, {f"r{i}": (f'["order-{w}{i}"]', "{}") for i in range(4)})
    want = {f"{w}-r{i}" for i in range(4)}
    found, sql, _ = _search(f"order-{w}")
    assert found == want and any("MATCH(" in q for q in sql)
    monkeypatch.setattr(RunAdmin, "scan_probe_seconds", 0.5)
    found, sql, notes = _search(f"order-{w}")
    assert found == want and not any("MATCH(" in q for q in sql)
    assert not any("full-text index" in n for n in notes)
    monkeypatch.setattr(RunAdmin, "scan_probe_seconds", 0)
    monkeypatch.setattr(RunAdmin, "fulltext_rows", 3)
    found, sql, notes = _search(f"order-{w}")
    assert found == want and not any("full-text index" in n for n in notes)


def test_migration_0012_adds_the_index_on_mariadb_only_and_is_reversible():
    """Forward: a FULLTEXT index ``cd_run_args_ft``; backward: none; forward again."""
    setup()
    require_mariadb()
    import pymysql
    from django.core.management import call_command
    from django.db import connections

    settings = connections["mariadb"].settings_dict
    name = f"cd_mig_{uuid.uuid4().hex[:8]}"
    admin = pymysql.connect(host=settings["HOST"], port=int(settings["PORT"]),
                            user=settings["USER"], password=settings["PASSWORD"],
                            autocommit=True)
    with admin.cursor() as cursor:
        cursor.execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4")
    alias = f"mig_{name}"
    configured = connections.configure_settings(
        {**connections.settings, alias: {**settings, "NAME": name}})
    connections.settings[alias] = configured[alias]

    def fulltext() -> list[str]:
        with connections[alias].cursor() as cursor:
            cursor.execute("SELECT DISTINCT INDEX_NAME FROM information_schema.STATISTICS WHERE "
                           "TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'celery_durable_run' "
                           "AND INDEX_TYPE = 'FULLTEXT'")
            return [row[0] for row in cursor.fetchall()]

    try:
        call_command("migrate", "celery_durable", database=alias, verbosity=0)
        assert fulltext() == ["cd_run_args_ft"]
        call_command("migrate", "celery_durable", "0011", database=alias, verbosity=0)
        assert fulltext() == []
        call_command("migrate", "celery_durable", database=alias, verbosity=0)
        assert fulltext() == ["cd_run_args_ft"]
    finally:
        connections[alias].close()
        del connections.settings[alias]
        with admin.cursor() as cursor:
            cursor.execute(f"DROP DATABASE IF EXISTS `{name}`")
        admin.close()


def test_migration_0012_does_nothing_on_postgresql_and_sqlite():
    """No FULLTEXT anywhere but MySQL/MariaDB: the migration is applied and changed nothing."""
    setup()
    from django.db import connections
    from django.db.migrations.recorder import MigrationRecorder

    for alias in ("sqlite", "default"):
        applied = MigrationRecorder(connections[alias]).applied_migrations()
        assert ("celery_durable", "0012_mysql_arguments_fulltext") in applied
        indexes = connections[alias].introspection.get_constraints(
            connections[alias].cursor(), "celery_durable_run")
        assert "cd_run_args_ft" not in indexes


def test_a_search_neither_way_finds_quickly_sorts_the_rows_it_reads_in_the_same_order(
        maria, monkeypatch):
    """When reading the newest rows finds no page in time and the index gives too many, the
    rows are read in the table's order and sorted by an expression of ``created_at``: the
    same order as the list's own, ties broken by id."""
    from django.contrib.admin.sites import site
    from django.contrib.messages.storage.cookie import CookieStorage
    from django.test import RequestFactory

    from celery_durable_django.admin import mysql_search, runs
    from celery_durable_django.models import Run

    w = maria
    _runs(w, {f"r{i}": (f'["order-{w}{i}"]', "{}") for i in range(5)})
    Run.objects.using("mariadb").filter(id=f"{w}-r3").update(
        created_at=Run.objects.using("mariadb").get(id=f"{w}-r2").created_at)  # a tie
    monkeypatch.setattr(runs.RunAdmin, "scan_probe_seconds", 0.05)
    monkeypatch.setattr(runs.RunAdmin, "fulltext_rows", 1)  # the index gives too many
    monkeypatch.setattr(mysql_search, "rows_within", lambda qs, limit, seconds: None
                        if seconds == 0.05 else runs.RunAdmin.fulltext_rows + 1)
    request = RequestFactory().get("/", {"q": f"order-{w}"})
    request._messages = CookieStorage(request)
    admin = site._registry[Run]
    listed = Run.objects.using("mariadb").order_by(  # as the list does
        "-created_at", "-id", "-created_at", "-id")
    found, _ = admin.get_search_results(request, listed, f"order-{w}")
    assert "+ 0) DESC" in str(found.query)
    assert list(found.values_list("id", flat=True)) == list(
        found.order_by("-created_at", "-id").values_list("id", flat=True))
    assert len(found) == 5
    by_task, _ = admin.get_search_results(request, listed.order_by("task"), f"order-{w}")
    assert "+ 0" not in str(by_task.query)  # an order the user chose is kept


def test_the_index_is_found_on_mariadb_only_and_the_choice_is_offered_only_with_it():
    """``fulltext_index``: InnoDB's word lengths on MariaDB, None on PostgreSQL and SQLite,
    where the list has no "search in arguments" filter."""
    setup()
    require_mariadb()
    from django.contrib.admin.sites import site
    from django.test import RequestFactory

    from celery_durable_django.admin.mysql_search import (
        ArgumentScanFilter,
        FullText,
        fulltext_index,
    )
    from celery_durable_django.models import Run

    assert fulltext_index("mariadb") == FullText(3, 84)  # this server's settings
    from django.db import connections

    with connections["mariadb"].cursor() as cursor:  # a case-sensitive LIKE: not used
        columns = ", ".join(f"MODIFY {c} LONGTEXT CHARACTER SET {{0}} COLLATE {{1}} NOT NULL"
                            for c in ("args", "kwargs"))
        cursor.execute("ALTER TABLE celery_durable_run "
                       + columns.format("latin1", "latin1_general_cs"))
        try:
            assert fulltext_index("mariadb") is None
        finally:
            cursor.execute("ALTER TABLE celery_durable_run "
                           + columns.format("utf8mb4", "utf8mb4_general_ci"))
    assert fulltext_index("mariadb") == FullText(3, 84)
    assert fulltext_index("default") is None and fulltext_index("sqlite") is None
    filters = site._registry[Run].get_list_filter(RequestFactory().get("/"))
    assert ArgumentScanFilter not in filters
