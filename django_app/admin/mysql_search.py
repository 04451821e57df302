"""The admin's search in the arguments on MySQL/MariaDB, with a million runs.

MariaDB reads a table with one thread: a ``LIKE '%text%'`` over every run's arguments
takes seconds at 1,000,000 runs. Migration 0012 adds a FULLTEXT index of the arguments;
:func:`plan` picks the cheapest of three ways for each search (the rows found are the
same, but for the one miss :func:`used_message` names):

* row by row along the newest runs, when a page of matches turns up within
  ``RunAdmin.scan_probe_seconds`` (common text);
* through the index, narrowed to the runs holding every whole word the text implies
  (:func:`fulltext_words`), then the same ``LIKE``, when that gives at most
  ``RunAdmin.fulltext_rows`` runs within ``RunAdmin.fulltext_probe_seconds`` (rare words);
* else the whole table read in its own order and sorted (an expression of
  ``created_at``), not the newest-first index walked with one key lookup per row.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from django.contrib import admin
from django.db import DatabaseError, connections, transaction
from django.db.models import DecimalField, F, Func, OrderBy, QuerySet
from django.http import HttpRequest
from django.utils.text import smart_split, unescape_string_literal

from ..models import Run

#: The FULLTEXT index over ``args, kwargs`` (migration 0012, MySQL/MariaDB only).
FULLTEXT_INDEX = "cd_run_args_ft"
#: InnoDB's default stopwords (``INFORMATION_SCHEMA.INNODB_FT_DEFAULT_STOPWORD``): not indexed.
STOPWORDS = frozenset((
    "a", "about", "an", "are", "as", "at", "be", "by", "com", "de", "en", "for", "from",
    "how", "i", "in", "is", "it", "la", "of", "on", "or", "that", "the", "this", "to", "und",
    "was", "what", "when", "where", "who", "will", "with", "www"))
#: A word as InnoDB's full-text parser cuts ASCII text (letters, digits, underscore).
_WORD = re.compile(r"[A-Za-z0-9_]+")


@dataclass(frozen=True)
class FullText:
    """The full-text index of a MySQL/MariaDB database: the word lengths it holds."""

    min_size: int
    max_size: int


def fulltext_index(using: str) -> FullText | None:
    """The arguments' FULLTEXT index on ``using`` and its word lengths, or None (not
    MySQL/MariaDB, no index, not InnoDB, a stopword list other than InnoDB's default,
    which :func:`fulltext_words` could not allow for, or arguments in a case-sensitive
    collation)."""
    connection = connections[using]
    if connection.vendor != "mysql":
        return None
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT @@innodb_ft_min_token_size, @@innodb_ft_max_token_size, "
            "COALESCE(@@GLOBAL.innodb_ft_server_stopword_table, ''), "
            "COALESCE(@@GLOBAL.innodb_ft_user_stopword_table, ''), "
            "(SELECT ENGINE FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE() "
            " AND TABLE_NAME = %s), "
            "(SELECT COUNT(*) FROM information_schema.STATISTICS WHERE TABLE_SCHEMA = DATABASE()"
            " AND TABLE_NAME = %s AND INDEX_NAME = %s AND INDEX_TYPE = 'FULLTEXT'), "
            "(SELECT COUNT(*) FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = DATABASE() "
            " AND TABLE_NAME = %s AND COLUMN_NAME IN ('args', 'kwargs') "
            " AND COLLATION_NAME NOT LIKE '%%\\_ci')",
            [Run._meta.db_table, Run._meta.db_table, FULLTEXT_INDEX, Run._meta.db_table])
        low, high, server_stop, user_stop, engine, found, case_sensitive = cursor.fetchone()
    if (not found or str(engine).lower() != "innodb" or server_stop or user_stop
            or case_sensitive):  # (a case-sensitive LIKE: the index's words are lower case)
        return None
    return FullText(int(low), int(high))


def fulltext_words(text: str, index: FullText) -> list[str]:
    """Boolean-mode terms that every row whose arguments contain ``text`` (as ``LIKE
    '%text%'`` finds it) matches in the full-text index; empty when there are none.

    A word of ``text`` with a non-word character on both sides is a whole word of every
    such row (``+word``); the last word, with one before it, starts a word of the row
    (``+word*``). The first word, or a word alone, may be the end or the middle of a
    longer word: no term. Words InnoDB does not index give no term: shorter than
    ``min_size``, longer than ``max_size``, a stopword or (for ``word*``) the start of one.
    Only ASCII text: how InnoDB classes other characters is not checked here.
    """
    if not text.isascii():
        return []
    terms = []
    for match in _WORD.finditer(text):
        word = match.group().lower()
        before, after = match.start() > 0, match.end() < len(text)
        if not before or not index.min_size <= len(word) <= index.max_size:
            continue
        if after and word not in STOPWORDS:
            terms.append(f"+{word}")
        elif not after and not any(stop.startswith(word) for stop in STOPWORDS):
            terms.append(f"+{word}*")
    return terms


def fulltext_query(queryset: QuerySet[Any], term: str) -> tuple[QuerySet[Any], FullText] | None:
    """``queryset`` narrowed by the FULLTEXT index to rows that may hold every word of the
    admin search ``term`` (split as Django's admin splits it), and the index; None when
    there is no such index or no word to look up. The caller still applies the ``LIKE``
    search: the index only leaves out rows that cannot match it."""
    index = fulltext_index(queryset.db)
    if index is None:
        return None
    terms: list[str] = []
    for bit in smart_split(term):
        if bit.startswith(('"', "'")) and bit[0] == bit[-1]:
            bit = unescape_string_literal(bit)
        terms.extend(t for t in fulltext_words(bit, index) if t not in terms)
    if not terms:
        return None
    table = connections[queryset.db].ops.quote_name(Run._meta.db_table)
    return queryset.extra(
        where=[f"MATCH({table}.`args`, {table}.`kwargs`) AGAINST (%s IN BOOLEAN MODE)"],
        params=[" ".join(terms)]), index


@contextmanager
def time_limit(using: str, seconds: float) -> Iterator[None]:
    """MySQL/MariaDB: the SELECTs run inside stop after ``seconds`` (with an error; MariaDB
    may finish a full-text index read first). The session's own limit is put back."""
    connection = connections[using]
    mariadb = bool(getattr(connection, "mysql_is_mariadb", False))
    name, value = (("max_statement_time", seconds) if mariadb
                   else ("max_execution_time", int(seconds * 1000)))
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT @@SESSION.{name}")
        (before,) = cursor.fetchone()
        cursor.execute(f"SET SESSION {name} = %s", [value])
    try:
        yield
    finally:
        with connection.cursor() as cursor:
            cursor.execute(f"SET SESSION {name} = %s", [before])


def rows_within(queryset: QuerySet[Any], limit: int, seconds: float) -> int | None:
    """How many rows ``queryset`` has, counted up to ``limit`` (MySQL/MariaDB), or None when
    that takes more than ``seconds``."""
    try:
        with transaction.atomic(using=queryset.db), time_limit(queryset.db, seconds):
            return int(queryset.values("pk")[:limit].count())
    except DatabaseError:  # interrupted
        return None


class ArgumentScanFilter(admin.SimpleListFilter):
    """MySQL/MariaDB with the arguments' FULLTEXT index: search the arguments through it
    where that is quicker (the default, see ``RunAdmin._fulltext``) or read every run's
    arguments row by row (slow; finds the one thing the index can miss)."""

    title = "search in arguments"
    parameter_name = "search_rows"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        """One choice: every row."""
        return [("1", "every run, row by row (slow)")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        """Unchanged: ``RunAdmin.get_search_results`` reads the choice."""
        return queryset

    def choices(self, changelist: Any) -> Any:
        """Django's choices, "All" named for what it does here."""
        choices = list(super().choices(changelist))
        choices[0]["display"] = "by the full-text index where that is quicker"
        return choices


def plan(run_admin: Any, request: HttpRequest, queryset: QuerySet[Any], term: str,
         by_rows: Callable[[QuerySet[Any]], QuerySet[Any]]
         ) -> tuple[QuerySet[Any], FullText | None]:
    """The runs to search ``term`` in (``by_rows`` applies the ``LIKE`` search) and the
    index used, if the FULLTEXT index narrowed them (see the module's docstring)."""
    scan = run_admin.scan_probe_seconds  # (0: straight to the index, for tests)
    if scan and rows_within(by_rows(queryset).order_by(*run_admin.ordering),
                            run_admin.list_per_page + 1, scan) is not None:
        return queryset, None
    narrowed = (None if request.GET.get(ArgumentScanFilter.parameter_name)
                else fulltext_query(queryset, term))
    if narrowed is not None:
        found = rows_within(narrowed[0].order_by(), run_admin.fulltext_rows + 1,
                            run_admin.fulltext_probe_seconds)
        if found is not None and found <= run_admin.fulltext_rows:
            return narrowed
    if scan and tuple(dict.fromkeys(queryset.query.order_by)) == run_admin.ordering:
        # The same order by an expression of created_at: the table is read in its own
        # order and sorted (bench/NOTES.md: 45 s against 1.7 s at 1,000,000 runs).
        queryset = queryset.order_by(
            OrderBy(Func(F("created_at"), template="(%(expressions)s + 0)",
                         output_field=DecimalField()), descending=True), "-id")
    return queryset, None


def used_message(index: FullText) -> str:
    """What the page says when the index narrowed a search (and the one miss)."""
    return ("Searched the arguments through their full-text index: the words of the search, "
            f"then the text itself. A word longer than {index.max_size} characters is not in "
            "that index, so the end of a search does not find it by its beginning; choose "
            "\u201cevery run, row by row\u201d under \u201csearch in arguments\u201d to "
            "read every run's arguments (slow).")
