"""The runs lists past the count cap (every page reachable, honest counts, bulk actions on all
matching), the date range filter and the run id prefix search, in process on PostgreSQL."""

from __future__ import annotations

import datetime as dt
import re
import uuid

import pytest

pytestmark = pytest.mark.usefixtures("db")

RUNS = "/admin/celery_durable/run/"
DEAD = "/admin/celery_durable/deadletter/"


@pytest.fixture
def small_pages(monkeypatch):
    """A count cap of 20 and 5 runs a page, so that 63 runs stand for millions."""
    from celery_durable_django.admin.changelist import CappedPaginator
    from celery_durable_django.admin.runs import DeadLetterAdmin, RunAdmin

    monkeypatch.setattr(CappedPaginator, "cap", 20)
    monkeypatch.setattr(RunAdmin, "list_per_page", 5)
    monkeypatch.setattr(DeadLetterAdmin, "list_per_page", 5)


def _many(status: str, n: int, **fields) -> list[str]:
    """``n`` runs one second apart, newest first; their ids in the list's order."""
    from django.utils import timezone

    from celery_durable_django.models import Run

    now = timezone.now()
    rows = [Run(id=str(uuid.uuid4()), task="shop.tasks.bulk", args="[]", kwargs="{}",
                options={}, status=status, created_at=now - dt.timedelta(seconds=i),
                updated_at=now, finished_at=now - dt.timedelta(seconds=i), **fields)
            for i in range(n)]
    Run.objects.bulk_create(rows)
    from django.db import connection

    with connection.cursor() as cursor:  # fresh planner statistics: the estimate is of these
        cursor.execute("ANALYZE celery_durable_run")
    return [row.id for row in rows]


def _ids(page: str) -> list[str]:
    """The run ids listed on a changelist page, in order."""
    found = re.findall(r'<th class="field-id"><a href="[^"]*/(?:run|deadletter)/([^/"]+)/change/',
                       page)
    return list(dict.fromkeys(found))


def test_every_page_past_the_count_cap_is_reachable_and_the_count_says_about(
        small_pages, make_run, make_user, client_for):
    """Past the cap the list says "about N" (never a bare capped number) and every page opens:
    paging from 1 to the last reaches each run exactly once, the last page holds the oldest."""
    ids = _many("SUCCEEDED", 63)
    make_run("FAILED")  # filtered out
    client = client_for(make_user())
    first = client.get(RUNS, {"status": "SUCCEEDED"})
    assert first.status_code == 200
    text = first.content.decode()
    assert re.search(r'class="cd-result-count"[^>]*>about [\d,]+</span>', text), text[-3000:]
    assert ">21</span>" not in text and "21 runs" not in text  # the capped count is not shown
    seen: list[str] = []
    for number in range(1, 14):
        response = client.get(RUNS, {"status": "SUCCEEDED", "p": number})
        assert response.status_code == 200, (number, response.get("Location"))
        seen += _ids(response.content.decode())
    assert seen == ids  # every run once, in order
    last = client.get(RUNS, {"status": "SUCCEEDED", "p": 13}).content.decode()
    assert _ids(last) == ids[60:]
    assert 'class="cd-result-count">63</span>' in last  # a back page counts exactly
    beyond = client.get(RUNS, {"status": "SUCCEEDED", "p": 14})
    assert beyond.status_code == 302 and "e=1" in beyond["Location"]


def test_a_bulk_action_on_all_matching_acts_on_every_matching_run(
        small_pages, make_user, client_for):
    """"Select all" past the cap confirms the exact count and acts on every matching run."""
    from celery_durable_django.models import Run

    ids = _many("RUNNING", 33, owner="host:1:1", token=1)
    client = client_for(make_user("cancel_run"))
    url = f"{RUNS}?status=RUNNING"
    page = client.get(url).content.decode()
    assert "Select all about" in page
    form = {"action": "cancel_runs", "select_across": "1", "index": "0",
            "_selected_action": ids[:5]}
    asked = client.post(url, form)
    assert asked.status_code == 200
    assert "Cancel 33 runs?" in asked.content.decode()
    assert Run.objects.filter(status="RUNNING").count() == 33  # nothing done yet
    done = client.post(url, {**form, "post": "yes"})
    assert done.status_code == 302
    assert Run.objects.filter(pk__in=ids, status="CANCELLED").count() == 33


def test_the_date_range_filter_and_the_past_hour(make_run, make_user, client_for):
    """From/to bounds (a date, or a date and time in the admin's zone) and "past hour"
    measured by the database's clock; "failed in the last hour" is status + finished range;
    an unreadable bound is the admin's invalid-lookup page, not a 500."""
    from django.utils import timezone

    now = timezone.now()
    recent = make_run("FAILED", created_at=now - dt.timedelta(minutes=30),
                      finished_at=now - dt.timedelta(minutes=20))
    older = make_run("FAILED", created_at=now - dt.timedelta(hours=5),
                     finished_at=now - dt.timedelta(hours=4))
    old_ok = make_run("SUCCEEDED", created_at=now - dt.timedelta(days=3),
                      finished_at=now - dt.timedelta(minutes=10))
    client = client_for(make_user())

    def listed(url: str, **params: str) -> set[str]:
        response = client.get(url, params)
        assert response.status_code == 200, response.get("Location")
        return set(_ids(response.content.decode())) & {recent.pk, older.pk, old_ok.pk}

    assert listed(RUNS, created_at__within="1h") == {recent.pk}
    assert listed(RUNS, created_at__within="24h") == {recent.pk, older.pk}
    assert listed(RUNS, status="FAILED", finished_at__within="1h") == {recent.pk}
    assert listed(DEAD, finished_at__within="1h") == {recent.pk}
    day = timezone.localtime(now - dt.timedelta(days=3)).date()
    assert listed(RUNS, created_at__gte=day.isoformat(),
                  created_at__lt=(day + dt.timedelta(days=1)).isoformat()) == {old_ok.pk}
    since = timezone.localtime(now - dt.timedelta(hours=6)).strftime("%Y-%m-%dT%H:%M:%S")
    until = timezone.localtime(now - dt.timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M")
    page = client.get(RUNS, {"created_at__gte": since, "created_at__lt": until})
    assert set(_ids(page.content.decode())) & {recent.pk, older.pk, old_ok.pk} == {older.pk}
    assert f'value="{since}"' in page.content.decode()  # the form shows the bound it applied
    for bad in ({"created_at__within": "soon"}, {"created_at__gte": "yesterday"}):
        response = client.get(RUNS, bad)
        assert response.status_code == 302 and "e=1" in response["Location"], bad


def test_a_run_id_prefix_finds_the_run_through_an_index(make_run, make_user, client_for):
    """The first characters of a run id find it with ``LIKE 'prefix%'`` on the primary key,
    which PostgreSQL serves from the key's pattern index (no scan of the table)."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    a, b = make_run("SUCCEEDED"), make_run("SUCCEEDED")
    client = client_for(make_user())
    with CaptureQueriesContext(connection) as queries:
        page = client.get(RUNS, {"q": a.pk[:8]}).content.decode()
    assert a.pk in _ids(page) and b.pk not in _ids(page)
    prefix = [q["sql"] for q in queries.captured_queries
              if "LIKE" in q["sql"] and f"'{a.pk[:8]}%'" in q["sql"]]
    assert prefix, [q["sql"] for q in queries.captured_queries]
    assert not any('UPPER("celery_durable_run"."args"' in q["sql"]
                   for q in queries.captured_queries)  # the arguments were not searched
    from django.db import transaction

    # SET LOCAL holds inside a transaction only: without one the planner would be free to
    # pick a scan of this small table and the test would say nothing about the index.
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")
        cursor.execute("EXPLAIN SELECT id FROM celery_durable_run WHERE id LIKE %s",
                       [f"{a.pk[:8]}%"])
        plan = "\n".join(row[0] for row in cursor.fetchall())
    assert "Index" in plan and "Seq Scan" not in plan, plan


def test_without_a_planner_estimate_the_count_says_more_than_the_cap(monkeypatch):
    """On a database that gives no row estimate (SQLite here) the list says "more than
    20", never a made-up "about"; pages still open past the cap."""
    from django.utils import timezone
    from django_support import truncate

    from celery_durable_django.admin.changelist import CappedPaginator
    from celery_durable_django.models import Run

    monkeypatch.setattr(CappedPaginator, "cap", 20)
    truncate("sqlite")
    now = timezone.now()
    Run.objects.using("sqlite").bulk_create([
        Run(id=f"run-{i:03d}", task="t", args="[]", kwargs="{}", options={},
            status="SUCCEEDED", created_at=now - dt.timedelta(seconds=i), updated_at=now)
        for i in range(30)])
    runs = Run.objects.using("sqlite").order_by("-created_at", "-id")
    front = CappedPaginator(runs, 5)
    assert front.count_text == "more than 20" and front.estimated
    assert [r.id for r in front.page(5).object_list] == [f"run-{i:03d}" for i in range(20, 25)]
    back = CappedPaginator(runs, 5, wanted_page=6)
    assert back.count_text == "30" and not back.estimated
    assert [r.id for r in back.page(6).object_list] == [f"run-{i:03d}" for i in range(25, 30)]


def test_a_search_in_the_arguments_reads_the_newest_runs_unless_a_date_range_is_set(
        monkeypatch, make_user, client_for):
    """Text in the arguments is searched among the newest ``search_window`` runs (one index
    read finds where they start), saying so; a creation date range searches all of it."""
    from celery_durable_django.admin.runs import RunAdmin
    from celery_durable_django.models import Run

    monkeypatch.setattr(RunAdmin, "search_window", 3)
    ids = _many("SUCCEEDED", 6)  # newest first
    Run.objects.filter(pk__in=ids).update(args='["needle"]')
    client = client_for(make_user())
    page = client.get(RUNS, {"q": "needle"}).content.decode()
    assert _ids(page) == ids[:3]
    assert "Searched the arguments of the newest 3 runs." in page
    since = (dt.datetime.now(dt.timezone.utc) - dt.timedelta(hours=1)).strftime("%Y-%m-%d %H:%M")
    page = client.get(RUNS, {"q": "needle", "created_at__gte": since}).content.decode()
    assert _ids(page) == ids and "Searched the arguments of the newest" not in page
    assert _ids(client.get(RUNS, {"q": "haystack"}).content.decode()) == []
