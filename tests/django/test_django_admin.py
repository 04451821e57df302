"""The admin, in process on PostgreSQL: lists, run page, permissions, escaping, the form."""

from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.usefixtures("db")

RUNS = "/admin/celery_durable/run/"
DEAD = "/admin/celery_durable/deadletter/"


def test_changelist_lists_runs_with_status_step_and_filters(make_run, make_user, client_for):
    """The runs list shows id, task, coloured status, step and attempts; filters narrow it."""
    failed = make_run("FAILED")
    ok = make_run("SUCCEEDED", task="shop.ship", current_step="ship#0", attempts=1,
                  idempotency_key="order-42")
    client = client_for(make_user())
    page = client.get(RUNS).content.decode()
    assert failed.pk in page and ok.pk in page
    assert 'cd-status-failed' in page and 'cd-status-succeeded' in page
    assert "charge#0" in page and "order-42" in page
    only_failed = client.get(RUNS, {"status": "FAILED"}).content.decode()
    assert failed.pk in only_failed and ok.pk not in only_failed
    by_task = client.get(RUNS, {"task": "shop.ship"}).content.decode()
    assert ok.pk in by_task and failed.pk not in by_task
    assert ">shop.ship<" in page  # the task filter found the name by its index


def test_search_by_run_id_key_and_arguments(make_run, make_user, client_for):
    """Search finds a run by exact id, by idempotency key, and by text in its arguments."""
    a = make_run("SUCCEEDED", args='["alpha-widget", 1]', idempotency_key="key-a")
    b = make_run("SUCCEEDED", args='["beta-gadget", 2]')
    client = client_for(make_user())
    for term, hit, miss in ((a.pk, a, b), ("key-a", a, b), ("beta-gad", b, a)):
        page = client.get(RUNS, {"q": term}).content.decode()
        assert hit.pk in page and miss.pk not in page, term


def test_changelist_never_counts_the_whole_table(make_run, make_user, client_for):
    """The list is rendered without a full COUNT(*) (capped count, no facets)."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    for _ in range(3):
        make_run("SUCCEEDED")
    client = client_for(make_user())
    with CaptureQueriesContext(connection) as queries:
        assert client.get(RUNS).status_code == 200
    counts = [q["sql"] for q in queries.captured_queries if "COUNT(" in q["sql"].upper()]
    assert counts and all("LIMIT" in sql.upper() for sql in counts), counts


def test_dead_letter_view_lists_only_failed_runs_with_step_and_error(make_run, make_user,
                                                                     client_for):
    """The dead-letter view shows failed runs only, with the failing step and the error."""
    failed = make_run("FAILED")
    running = make_run("RUNNING")
    page = client_for(make_user()).get(DEAD).content.decode()
    assert failed.pk in page and running.pk not in page
    assert "charge#0" in page and "amount must be positive, got 0" in page
    assert "PermanentError" in page


def test_run_page_shows_arguments_timeline_and_escapes_stored_html(make_run, make_user,
                                                                   client_for):
    """The run page shows args, error, traceback and a step timeline; stored HTML is text."""
    script = "<script>window.__pwned = 1</script>"
    run = make_run("FAILED", args=json.dumps([script, 0]), steps=[
        {"name": "reserve", "value": json.dumps({"sku": "sku-1", "note": script})},
        {"name": "charge", "status": "failed", "attempts": 3, "value": None,
         "error_type": "celery_durable.errors.PermanentError",
         "error_message": "amount must be positive, got 0", "error_traceback": "Trace <b>"}])
    page = client_for(make_user()).get(f"{RUNS}{run.pk}/change/").content.decode()
    assert "<script>window.__pwned" not in page
    assert "&lt;script&gt;window.__pwned = 1&lt;/script&gt;" in page
    assert "Trace &lt;b&gt;" in page
    assert 'id="cd-step-0"' in page and 'id="cd-step-1"' in page
    assert "&quot;sku&quot;: &quot;sku-1&quot;" in page  # pretty JSON, escaped
    assert "amount must be positive, got 0" in page


def test_run_page_marks_transactional_steps(make_run, make_user, client_for):
    """A step checkpointed with its writes in one transaction (``atomic=True``) is marked
    on the step table and in the waterfall; a plain step is not."""
    run = make_run("SUCCEEDED", steps=[{"name": "create_order", "atomic": True,
                                        "value": "17"},
                                       {"name": "send_email", "value": "true"}])
    page = client_for(make_user()).get(f"{RUNS}{run.pk}/change/").content.decode()
    rows = page[page.index('id="cd-step-0"'):].split('id="cd-step-1"')
    assert "cd-atomic" in rows[0] and ">transactional</span>" in rows[0]
    assert "cd-atomic" not in rows[1]
    waterfall = page[page.index('id="cd-waterfall"'):page.index('<table class="cd-timeline">')]
    before, after = waterfall.split("send_email#0", 1)
    assert "attempt 1 succeeded, transactional" in before and "transactional" not in after


def test_run_page_links_the_celery_task_result(make_run, make_user, client_for):
    """The run page links django-celery-results' TaskResult of the same task id."""
    from django.contrib.auth.models import Permission
    from django_celery_results.models import TaskResult

    run = make_run("FAILED")
    result = TaskResult.objects.create(task_id=run.pk, status="FAILURE")
    user = make_user()
    user.user_permissions.add(Permission.objects.get(codename="view_taskresult"))
    page = client_for(user).get(f"{RUNS}{run.pk}/change/").content.decode()
    assert f"/admin/django_celery_results/taskresult/{result.pk}/change/" in page


def test_user_without_permissions_sees_no_actions_and_gets_403(make_run, make_user,
                                                               client_for):
    """A viewer sees no retry/cancel controls; posting an action or the form anyway is a 403."""
    run = make_run("FAILED")
    client = client_for(make_user())
    for url in (RUNS, DEAD, f"{RUNS}{run.pk}/change/"):
        page = client.get(url).content.decode()
        for name in ("retry_from_failed_step", "restart_from_scratch",
                     "retry_with_edited_arguments", "cancel_runs", "cd-edit-arguments"):
            assert name not in page, (url, name)
    for url in (RUNS, DEAD):
        response = client.post(url, {"action": "retry_from_failed_step", "index": 0, "post": "yes",
                                     "_selected_action": [run.pk]})
        assert response.status_code == 403
    assert client.get(f"{RUNS}{run.pk}/retry-with-arguments/").status_code == 403
    assert client.post(f"{RUNS}{run.pk}/retry-with-arguments/",
                       {"args": "[1]", "kwargs": "{}", "from_step": "failed"}).status_code == 403
    run.refresh_from_db()
    assert run.status == "FAILED"


def test_each_action_needs_its_own_permission(make_run, make_user, client_for):
    """A user with only the retry permission gets only the retry action."""
    make_run("FAILED")
    page = client_for(make_user("retry_run")).get(DEAD).content.decode()
    assert "retry_from_failed_step" in page
    for name in ("restart_from_scratch", "retry_with_edited_arguments", "cancel_runs"):
        assert name not in page


def test_retry_action_resets_the_run_logs_and_reports(make_run, make_user, client_for):
    """Bulk retry from the dead-letter view resets each run, writes a LogEntry, says so."""
    from django.contrib.admin.models import LogEntry

    runs = [make_run("FAILED", steps=[{"name": "reserve", "value": "1"}]) for _ in range(2)]
    client = client_for(make_user("retry_run"))
    response = client.post(DEAD, {"action": "retry_from_failed_step", "index": 0, "post": "yes",
                                  "_selected_action": [r.pk for r in runs]}, follow=True)
    assert "2 runs re-triggered from the failed step." in response.content.decode()
    for run in runs:
        run.refresh_from_db()
        assert run.status == "PENDING" and run.steps.count() == 1
    assert LogEntry.objects.filter(object_id__in=[r.pk for r in runs]).count() == 2


def test_cancel_marks_the_run_cancelled(make_run, make_user, client_for):
    """Cancel (from the run page) marks a running run CANCELLED and returns to the page."""
    run = make_run("RUNNING", owner="host:1:1", token=3)
    client = client_for(make_user("cancel_run"))
    page = f"{RUNS}{run.pk}/change/"
    assert 'id="cd-cancel_runs"' in client.get(page).content.decode()
    response = client.post(RUNS, {"action": "cancel_runs", "index": 0, "post": "yes",
                                  "_selected_action": [run.pk], "next": page})
    assert response.status_code == 302 and response["Location"] == page
    run.refresh_from_db()
    assert run.status == "CANCELLED" and run.token == 4 and run.owner == ""


def test_retry_with_arguments_form_rejects_invalid_json(make_run, make_user, client_for):
    """Invalid JSON or a wrong shape is shown as a clear error and changes nothing."""
    run = make_run("FAILED")
    client = client_for(make_user("retry_run_with_arguments"))
    url = f"{RUNS}{run.pk}/retry-with-arguments/"
    form = client.get(url).content.decode()
    assert "&quot;tag&quot;" in form  # the stored arguments, pretty and escaped
    bad = client.post(url, {"args": '["tag", 3', "kwargs": "{}", "from_step": "failed"})
    assert bad.status_code == 200
    assert "Arguments must be valid JSON" in bad.content.decode()
    shape = client.post(url, {"args": '{"a": 1}', "kwargs": "[]", "from_step": "failed"})
    text = shape.content.decode()
    assert "Arguments must be a JSON list" in text
    assert "Keyword arguments must be a JSON object" in text
    # (a run without completed steps has nothing to keep: only "start" is offered)
    keep = client.post(url, {"args": "[]", "kwargs": "{}", "from_step": "failed"})
    assert "Select a valid choice. failed is not one of the available choices." in (
        keep.content.decode())
    run.refresh_from_db()
    assert run.status == "FAILED" and run.args == '["tag", 0]'


def test_replay_with_edited_arguments_starts_a_new_linked_run(make_run, make_user,
                                                                client_for):
    """Edited arguments never reuse the old arguments' results: the form starts a new run
    (linked both ways, the original unchanged); keeping completed steps needs a confirmation
    that names them, and arguments the task's signature refuses are a form error."""
    from django.contrib.admin.models import LogEntry

    from celery_durable_django.models import Run

    run = make_run("FAILED", steps=[{"name": "reserve", "value": "1"},
                                    {"name": "note", "value": '"n"'}])
    client = client_for(make_user("retry_run_with_arguments"))
    url = f"{RUNS}{run.pk}/retry-with-arguments/"
    form = client.get(url).content.decode()
    assert "Keep every completed step (2): reserve#0, note#0" in form
    assert "From note#0: keep the 1 step(s) before it" in form

    refused = client.post(url, {"args": '["tag", 7]', "kwargs": '{"bogus": 1}',
                                "from_step": "start"})
    assert refused.status_code == 200
    assert "arguments do not fit django_project.tasks.order" in refused.content.decode()
    unconfirmed = client.post(url, {"args": '["tag", 7]', "kwargs": '{"text": "hi"}',
                                    "from_step": "note#0"})
    assert unconfirmed.status_code == 200
    assert "keeps the values recorded for reserve#0" in unconfirmed.content.decode()
    assert Run.objects.count() == 1  # nothing started

    response = client.post(url, {"args": '["tag", 7]', "kwargs": '{"text": "hi"}',
                                 "from_step": "note#0", "confirm": "on"})
    assert response.status_code == 302
    new = Run.objects.exclude(pk=run.pk).get()
    assert response["Location"].endswith(f"/run/{new.pk}/change/")
    assert json.loads(new.args) == ["tag", 7] and json.loads(new.kwargs) == {"text": "hi"}
    assert list(new.steps.values_list("key", flat=True)) == ["reserve#0"]
    assert new.replay_of == run.pk
    run.refresh_from_db()
    assert run.status == "FAILED" and json.loads(run.args) == ["tag", 0]
    assert run.replayed_as == [new.pk] and run.steps.count() == 2
    entry = LogEntry.objects.get(object_id=run.pk)
    assert f"as run {new.pk}, keeping reserve#0" in entry.get_change_message()
    page = client.get(f"{RUNS}{run.pk}/change/").content.decode()
    assert f'Replayed as <a href="/admin/celery_durable/run/{new.pk}/change/">' in page
    page = client.get(f"{RUNS}{new.pk}/change/").content.decode()
    assert f'Replay of <a href="/admin/celery_durable/run/{run.pk}/change/">' in page


def test_retry_with_arguments_form_holds_long_arguments_whole(make_run, make_user, client_for):
    """Arguments longer than the page's display cut are pre-filled whole, so they can be posted."""
    import html
    import json

    from celery_durable_django.admin.changelist import MAX_SHOWN

    long_text = "x" * (MAX_SHOWN + 500)
    run = make_run("FAILED", args=json.dumps(["tag", long_text]))
    client = client_for(make_user("retry_run_with_arguments"))
    form = html.unescape(client.get(f"{RUNS}{run.pk}/retry-with-arguments/").content.decode())
    assert long_text in form and "more characters" not in form


def test_a_pending_wait_is_shown_as_waiting_and_an_ended_one_says_how(make_run, make_user,
                                                                       client_for):
    """A sleep or event wait that has not ended is never a succeeded step: its badge says
    Sleeping / Waiting with the wake time or timeout (UTC) and what it awaits; an ended wait
    says how it ended, with the event's payload escaped."""
    user = make_user()
    client = client_for(user)
    sleeping = make_run("SLEEPING", wait_kind="sleep", wait_step="sleep#0", wait_until=1.9e9,
                        steps=[{"name": "sleep", "value": json.dumps(
                            {"kind": "sleep", "until": 1.9e9, "wid": 3})}])
    page = client.get(f"{RUNS}{sleeping.pk}/change/").content.decode()
    row = page[page.index('id="cd-step-0"'):]
    row = row[:row.index("</tr>")]
    assert "cd-status-sleeping" in row and "cd-status-succeeded" not in row
    assert "sleeping until 2030-03-17 17:46:40 UTC" in row and "wid" not in row
    waiting = make_run("WAITING", wait_kind="event", wait_step="wait_for_event:approval#0",
                       wait_event="approval", wait_key="k-1", steps=[
                           {"name": "wait_for_event:approval", "value": json.dumps(
                               {"kind": "event", "event": "approval", "key": "k-1",
                                "until": None, "after": 0, "wid": 2})}])
    page = client.get(f"{RUNS}{waiting.pk}/change/").content.decode()
    assert "cd-status-waiting" in page
    assert "waiting for event &#x27;approval&#x27; key &#x27;k-1&#x27; until no timeout" in page
    ended = make_run("SUCCEEDED", steps=[{"name": "wait_for_event:approval", "value": json.dumps(
        {"kind": "event", "event": "approval", "key": "k-1", "until": None, "after": 0,
         "wid": 2, "outcome": "event", "payload": {"ok": "<b>yes</b>"}})}])
    page = client.get(f"{RUNS}{ended.pk}/change/").content.decode()
    assert "got event &#x27;approval&#x27; key &#x27;k-1&#x27;; payload:" in page
    assert "&lt;b&gt;yes&lt;/b&gt;" in page and "<b>yes</b>" not in page


def test_every_failed_attempt_of_a_step_is_on_the_run_page(make_user, client_for):
    """Attempts a step failed before it succeeded (the run's history, written by the store)
    are listed under the step with their errors and the delay chosen."""
    import uuid

    from celery_durable.records import ErrorInfo, RunStatus, StepRecord, StepStatus
    from celery_durable_django.store import DjangoStore

    store, run_id = DjangoStore(), str(uuid.uuid4())
    begun = store.begin(run_id, task="django_project.tasks.order", args='["t", 1]',
                        kwargs="{}", options={}, owner="w@h:1:1", lease_ttl=30)
    for attempt in (1, 2):
        failed = StepRecord(0, "charge#0", "charge", StepStatus.RETRYING, attempt, None,
                            ErrorInfo("builtins.TimeoutError", f"gateway slow #{attempt}",
                                      "Traceback ...", ["calling the gateway"]),
                            1_800_000_000.0, 1_800_000_001.5)
        failed.max_attempts, failed.retry_delay = 5, 2.0 * attempt
        assert store.park(run_id, begun.token, status=RunStatus.RETRYING, delay=0,
                          due_in=60, step=failed)
        begun = store.begin(run_id, task="django_project.tasks.order", args='["t", 1]',
                            kwargs="{}", options={}, owner="w@h:1:1", lease_ttl=30)
    assert store.save_step(run_id, begun.token, StepRecord(
        0, "charge#0", "charge", StepStatus.SUCCEEDED, 3, '"paid"', None, 1.8e9, 1.8e9 + 1))
    assert store.finish(run_id, begun.token, status=RunStatus.SUCCEEDED, result='"paid"')
    page = client_for(make_user()).get(f"{RUNS}{run_id}/change/").content.decode()
    assert "2 failed attempts before" in page
    assert "attempt 1 of 5 (retrying)" in page and "attempt 2 of 5 (retrying)" in page
    assert "builtins.TimeoutError: gateway slow #1" in page
    assert "builtins.TimeoutError: gateway slow #2" in page
    assert "next attempt after 4.0 s" in page and "calling the gateway" in page


def test_the_list_shows_attempt_of_max_retries_and_tags_and_filters_by_tag_and_version(
        make_user, client_for):
    """The attempts column says which attempt of how many and the run's step retries (not
    only the last step's attempts); tags are badges, and the tag and version filters go
    through RunTag and the version column."""
    import uuid

    from celery_durable.records import ErrorInfo, NewRun, RunStatus, StepRecord, StepStatus
    from celery_durable_django.store import DjangoStore

    store = DjangoStore()
    retrying, plain = str(uuid.uuid4()), str(uuid.uuid4())
    store.create_runs([NewRun(retrying, "django_project.tasks.order", tags=["customer:42"],
                              version="v7"),
                       NewRun(plain, "django_project.tasks.order", tags=["beta"])], grace=60)
    begun = store.begin(retrying, task="django_project.tasks.order", args="[]", kwargs="{}",
                        options={}, owner="w@h:1:1", lease_ttl=30)
    for position, key in enumerate(("reserve#0", "charge#0")):
        step = StepRecord(position, key, key[:-2], StepStatus.RETRYING, 2, None,
                          ErrorInfo("builtins.OSError", "down", ""), 1.8e9, 1.8e9 + 1)
        step.max_attempts, step.retry_delay = 5, 1.0
        assert store.park(retrying, begun.token, status=RunStatus.RETRYING, delay=0,
                          due_in=60, step=step)
        begun = store.begin(retrying, task="django_project.tasks.order", args="[]",
                            kwargs="{}", options={}, owner="w@h:1:1", lease_ttl=30)
        if position == 0:
            assert store.save_step(retrying, begun.token, StepRecord(
                0, key, "reserve", StepStatus.SUCCEEDED, 3, '"ok"', None, 1.8e9, 1.8e9))
    step = StepRecord(1, "charge#0", "charge", StepStatus.RETRYING, 3, None,
                      ErrorInfo("builtins.OSError", "down", ""), 1.8e9, 1.8e9 + 1)
    step.max_attempts, step.retry_delay = 5, 1.0
    assert store.park(retrying, begun.token, status=RunStatus.RETRYING, delay=0, due_in=60,
                      step=step)
    client = client_for(make_user())
    page = client.get(f"{RUNS}?tag=customer:42").content.decode()
    assert retrying in page and plain not in page
    row = page[page.index(f"{retrying}/change/"):]
    row = row[:row.index("</tr>")]
    assert "4 of 5 · 3 retries" in row  # the 4th attempt of charge comes next
    assert '<span class="cd-tag">customer:42</span>' in row
    page = client.get(f"{RUNS}?version=v7").content.decode()
    assert retrying in page and plain not in page
    page = client.get(RUNS).content.decode()
    assert "?tag=beta" in page and "?version=v7" in page  # the filters offer them


def test_a_bulk_action_asks_first_with_the_count_and_acts_only_when_confirmed(
        make_run, make_user, client_for):
    """Cancel (like every bulk action) shows "Cancel 3 runs?" listing them, changes nothing
    until confirmed, then acts on the whole selection ("select all" included)."""
    from celery_durable_django.models import Run

    runs = [make_run("RUNNING", owner="host:1:1", token=1) for _ in range(3)]
    other = make_run("RUNNING", owner="host:1:1", token=1, task="django_project.tasks.other")
    client = client_for(make_user("cancel_run"))
    url = f"{RUNS}?task=django_project.tasks.order"
    asked = client.post(url, {"action": "cancel_runs", "index": 0, "select_across": "1",
                              "_selected_action": [runs[0].pk]})
    page = asked.content.decode()
    assert asked.status_code == 200 and "Cancel 3 runs?" in page
    assert all(r.pk in page for r in runs) and other.pk not in page
    assert set(Run.objects.values_list("status", flat=True)) == {"RUNNING"}  # nothing yet
    done = client.post(url, {"action": "cancel_runs", "index": 0, "select_across": "1",
                             "_selected_action": [runs[0].pk], "post": "yes"})
    assert done.status_code == 302
    assert {r.pk: r.status for r in Run.objects.all()} == {
        **{r.pk: "CANCELLED" for r in runs}, other.pk: "RUNNING"}


def test_a_cancelled_run_keeps_its_name_and_arguments_on_the_results_row(make_run):
    """With result_extended, django-celery-results' REVOKED row of a cancelled run names the
    task and keeps its arguments (the REVOKED write used to blank them)."""
    from django_celery_results.models import TaskResult
    from django_project.celery import app

    from celery_durable import cancel_run

    run = make_run("SLEEPING", args='["tag-42", 7]', kwargs='{"text": "hi"}',
                   wait_kind="sleep", wait_step="sleep#0", wait_until=1.9e9)
    before = app.conf.result_extended
    app.conf.result_extended = True
    try:
        assert cancel_run(run.pk, app=app)
    finally:
        app.conf.result_extended = before
    row = TaskResult.objects.get(task_id=run.pk)
    assert row.status == "REVOKED" and row.task_name == "django_project.tasks.order"
    assert "tag-42" in (row.task_args or "") and "hi" in (row.task_kwargs or "")
