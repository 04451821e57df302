"""The live refresh endpoints of the run page and the run lists, in process on PostgreSQL
(the browser test in test_django_browser.py watches them work in Chromium)."""

from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.usefixtures("db")

RUNS = "/admin/celery_durable/run/"


def test_the_run_page_poll_follows_the_run_and_escapes_what_it_sends(make_run, make_user,
                                                                     client_for):
    """While a run runs, the page links its poll; the poll sends the status, the changing
    fields and the step table as escaped HTML, and says when the run has finished."""
    from celery_durable_django.models import Step

    run = make_run("RUNNING", owner="host:1:1", token=1, current_step="reserve#0")
    client = client_for(make_user())
    page = client.get(f"{RUNS}{run.pk}/change/").content.decode()
    live = f"{RUNS}{run.pk}/live/"
    assert f'data-live-url="{live}"' in page and "celery_durable/live.js" in page

    first = client.get(live).json()
    assert first["finished"] is False and first["status"] == "RUNNING"
    assert "cd-status-running" in first["fields"]["status_display"]
    assert "No step has been checkpointed yet." in first["steps"]

    Step.objects.create(run=run, position=0, key="reserve#0", name="reserve",
                        status="succeeded", attempts=1, started_at=1_700_000_000.0,
                        finished_at=1_700_000_000.5, value='"<script>alert(1)</script>"')
    run.status, run.result = "SUCCEEDED", '"<b>done</b>"'
    run.save()
    second = client.get(live).json()
    assert second["finished"] is True and second["status"] == "SUCCEEDED"
    assert "cd-status-succeeded" in second["fields"]["status_display"]
    assert "reserve#0" in second["steps"] and 'id="cd-step-0"' in second["steps"]
    assert "<script>" not in second["steps"] and "&lt;script&gt;" in second["steps"]
    assert "<b>" not in second["fields"]["result_display"]
    assert "&lt;b&gt;" in second["fields"]["result_display"]
    finished_page = client.get(f"{RUNS}{run.pk}/change/").content.decode()
    assert "data-live-url" not in finished_page  # nothing left to follow


def test_the_list_poll_sends_the_changing_cells_of_the_runs_asked_for(make_run, make_user,
                                                                      client_for):
    """``live/?id=…`` answers for the runs named, escaped, with whether each has finished."""
    running = make_run("RUNNING", owner="host:1:1", token=1,
                       current_step="<img src=x onerror=alert(1)>#0")
    done = make_run("SUCCEEDED")
    client = client_for(make_user())
    answer = client.get(f"{RUNS}live/", {"id": [running.pk, done.pk, "no-such-run"]}).json()
    assert set(answer["runs"]) == {running.pk, done.pk}
    assert answer["runs"][running.pk]["finished"] is False
    assert answer["runs"][done.pk]["finished"] is True
    cells = answer["runs"][running.pk]["fields"]
    assert "cd-status-running" in cells["status_display"]
    assert "<img" not in cells["step_display"] and "&lt;img" in cells["step_display"]
    assert client.get(f"{RUNS}live/").json() == {"runs": {}}


def test_the_polls_need_the_view_permission(make_run, make_user, client_for):
    """A staff user without view_run gets 403 from both polls; a visitor is sent to log in."""
    from django.contrib.auth.models import User
    from django.test import Client

    run = make_run("RUNNING", owner="host:1:1", token=1)
    nobody = User.objects.create_user("no-perms", password="pw", is_staff=True)
    client = client_for(nobody)
    assert client.get(f"{RUNS}{run.pk}/live/").status_code == 403
    assert client.get(f"{RUNS}live/", {"id": run.pk}).status_code == 403
    anonymous = Client().get(f"{RUNS}{run.pk}/live/")
    assert anonymous.status_code == 302 and "/login/" in anonymous["Location"]


def test_the_waterfall_draws_each_attempt_waits_children_and_recoveries(make_run, make_user,
                                                                        client_for):
    """One bar per step attempt (two failed attempts of charge, then its success) on the
    run's time axis, a sleep as its own bar up to the next step, a wait for children with a
    linked bar per child, a recovery as a mark, and the step's log lines under its bar."""
    import datetime as dt
    import re

    from celery_durable.records import ErrorInfo, HistoryEntry, StepRecord, StepStatus
    from celery_durable_django.models import HistoryRow, Step

    t0 = 1_800_000_000.0
    at = dt.datetime.fromtimestamp(t0, tz=dt.timezone.utc)
    child = make_run("SUCCEEDED", task="shop.tasks.pack", created_at=at,
                     started_at=at + dt.timedelta(seconds=60),
                     finished_at=at + dt.timedelta(seconds=80))
    run = make_run("SUCCEEDED", created_at=at, started_at=at,
                   finished_at=at + dt.timedelta(seconds=100))
    for attempt in (1, 2):
        failed = StepRecord(0, "charge#0", "charge", StepStatus.RETRYING, attempt, None,
                            ErrorInfo("builtins.TimeoutError", f"slow <{attempt}>", "Tb",
                                      [f"calling the gateway, try {attempt}"]),
                            t0 + 10 * attempt, t0 + 10 * attempt + 2)
        entry = HistoryEntry("attempt", t0 + 10 * attempt + 2, failed)
        HistoryRow.objects.create(run=run, kind="attempt", at=entry.at, entry=entry.to_json())
    lost = HistoryEntry("recovery", t0 + 45, detail="worker w1@host lost")
    HistoryRow.objects.create(run=run, kind="recovery", at=lost.at, entry=lost.to_json())
    rows = [("charge#0", "charge", t0 + 30, t0 + 31, '"paid"'),
            ("sleep#0", "sleep", t0 + 31, t0 + 31,
             '{"kind": "sleep", "until": 1800000050.0, "wid": 1, "outcome": "elapsed"}'),
            ("children#0", "children", t0 + 55, t0 + 55,
             json.dumps({"kind": "children", "ids": [child.pk], "outcome": "done"})),
            ("ship#0", "ship", t0 + 90, t0 + 95, '"shipped"')]
    for position, (key, name, start, end, value) in enumerate(rows):
        Step.objects.create(run=run, position=position, key=key, name=name, status="succeeded",
                            attempts=3 if name == "charge" else 1, started_at=start,
                            finished_at=end, value=value)
    page = client_for(make_user()).get(f"{RUNS}{run.pk}/change/").content.decode()
    box = page[page.index('id="cd-waterfall"'):page.index('<table class="cd-timeline">')]
    bars = re.findall(r'class="cd-wf-bar cd-wf-([\w-]+)" style="left: ([\d.]+)%; '
                      r'width: ([\d.]+)%"', box)
    assert [kind for kind, _, _ in bars] == ["failed", "failed", "succeeded", "waited",
                                             "waited", "child-succeeded", "succeeded"]
    where = [(round(float(left)), round(float(width))) for _, left, width in bars]
    # 100 s span: attempts at 10-12 s and 20-22 s, success at 30-31 s, the sleep from
    # 31 s to the next step at 55 s, the children's wait 55-90 s, the child 60-80 s.
    assert where[:6] == [(10, 2), (20, 2), (30, 1), (31, 24), (55, 35), (60, 20)]
    assert where[6] == (90, 5)
    assert "slow &lt;1&gt;" in box and "slow <1>" not in box
    assert "calling the gateway, try 2" in box
    assert f'/admin/celery_durable/run/{child.pk}/change/' in box
    assert re.search(r'class="cd-wf-mark" style="left: 45.000%" title="recovered: worker '
                     r'w1@host lost"', box)
    assert "recovered: worker w1@host lost at 2027-01-15 08:00:45 UTC" in box
    # the run's own times: to the second, with the time zone
    assert '<div class="readonly">2027-01-15 08:00:00 UTC</div>' in page  # created, started
    assert '<div class="readonly">2027-01-15 08:01:40 UTC</div>' in page  # finished
