"""The admin in a real browser (headless Chromium via Selenium) against a live server,
with a real worker running the runs. Screenshots: ``make screenshots`` saves them to
``docs/images/`` (otherwise a temporary folder)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
from browser import chromium
from browser import shot as save_shot
from harness import wait_for

pytestmark = [pytest.mark.worker, pytest.mark.usefixtures("db")]

PASSWORD = "pw-for-tests"


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Headless Chromium driven by chromedriver (skips, or fails under CI, when missing)."""
    yield from chromium()


def login(driver: Any, live: str, user: Any, next_url: str) -> None:
    """Log in through the admin login form, landing on ``next_url``."""
    from selenium.webdriver.common.by import By

    driver.delete_all_cookies()
    driver.get(f"{live}/admin/login/?next={next_url}")
    driver.find_element(By.NAME, "username").send_keys(user.username)
    driver.find_element(By.NAME, "password").send_keys(PASSWORD)
    driver.find_element(By.CSS_SELECTOR, "input[type=submit]").click()
    wait_for(lambda: next_url in driver.current_url, 10, 0.1, f"landing on {next_url}")
    # The screenshots need the room more than the navigation sidebar.
    driver.execute_script("localStorage.setItem('django.admin.navSidebarIsOpen', 'false')")
    driver.refresh()


def shot(driver: Any, name: str) -> None:
    """Save a full-height screenshot ``<name>.png`` (``docs/images`` under ``make screenshots``)."""
    save_shot(driver, name, min_height=700, max_height=2400)


def failed_run(tag: str, note: str) -> str:
    """Start a run of the test project's ``order`` that fails permanently; wait for it."""
    from django_project.tasks import order

    from celery_durable_django.models import Run

    result = order.delay(tag, 0, note)
    wait_for(lambda: Run.objects.filter(pk=result.id, status="FAILED").exists(), 30, 0.1,
             "the run to be dead-lettered")
    return str(result.id)


def test_operator_fixes_a_dead_letter_in_the_browser(django_worker, live_server, browser, tag,
                                                    make_user):
    """A staff user with the retry permission opens the dead-letter view, edits the failed
    run's arguments (a JSON typo is refused with a clear error), re-triggers it and sees it
    succeed; a step output containing <script> is shown as text and never runs."""
    from django_project.tasks import order
    from selenium.webdriver.common.by import By

    script = "<script>window.__pwned = 1</script>"
    run_id = failed_run(tag, script)
    for amount in (1, 2):  # some history for the screenshot of the runs list
        order.delay(f"{tag}-ok{amount}", amount, "ok").get(timeout=30)
    user = make_user("retry_run", "retry_run_with_arguments", "restart_run", "cancel_run")
    driver = browser

    login(driver, live_server, user, "/admin/celery_durable/deadletter/")
    assert run_id in driver.find_element(By.ID, "result_list").text
    assert "amount must be positive, got 0" in driver.page_source
    options = [o.get_attribute("value") for o in
               driver.find_elements(By.CSS_SELECTOR, "select[name=action] option")]
    assert "retry_from_failed_step" in options
    shot(driver, "admin-dead-letters")

    driver.find_element(By.CSS_SELECTOR, f"a[href*='{run_id}']").click()
    wait_for(lambda: driver.find_elements(By.ID, "cd-timeline"), 10, 0.1, "the run page")
    output = driver.find_element(By.CSS_SELECTOR, "#cd-step-1 .cd-output").text
    assert script in output  # shown as text...
    assert driver.execute_script("return window.__pwned") is None  # ...and never executed
    shot(driver, "admin-run-failed")

    driver.find_element(By.ID, "cd-edit-arguments").click()
    wait_for(lambda: driver.find_elements(By.NAME, "args"), 10, 0.1, "the arguments form")
    args = driver.find_element(By.NAME, "args")
    args.clear()
    args.send_keys(json.dumps([tag, 5])[:-1])  # a typo: the closing bracket is missing
    driver.find_element(By.ID, "cd-retry-submit").click()
    # (the click returns before the answer has loaded: wait for it, as below)
    wait_for(lambda: driver.find_elements(By.CSS_SELECTOR, ".errorlist"), 10, 0.1,
             "the form's error")
    error = driver.find_element(By.CSS_SELECTOR, ".errorlist").text
    assert "Arguments must be valid JSON" in error
    args = driver.find_element(By.NAME, "args")
    args.clear()
    args.send_keys(json.dumps([tag, 5]))
    shot(driver, "admin-retry-with-arguments")
    driver.find_element(By.ID, "cd-retry-submit").click()
    wait_for(lambda: "replayed with edited arguments as run" in driver.page_source, 10, 0.1,
             "the confirmation")
    assert run_id not in driver.current_url  # the replay's own page: a new run...
    assert f"Replay of {run_id}" in driver.find_element(
        By.CSS_SELECTOR, ".field-replay_links").text  # ...linked to the dead letter

    def succeeded() -> bool:
        driver.refresh()
        return bool(driver.find_elements(By.CSS_SELECTOR,
                                         ".field-status_display .cd-status-succeeded"))

    wait_for(succeeded, 30, 0.5, "the run page to show SUCCEEDED")
    assert "500" in driver.find_element(By.CSS_SELECTOR, ".field-result_display").text
    assert driver.execute_script("return window.__pwned") is None
    shot(driver, "admin-run-page")

    driver.get(f"{live_server}/admin/celery_durable/run/")
    assert run_id in driver.find_element(By.ID, "result_list").text
    shot(driver, "admin-runs")


def test_viewer_sees_no_retry_controls_and_gets_403(django_worker, live_server, browser, tag,
                                                    make_user):
    """A staff user without the retry permissions sees no retry actions or buttons, and a
    retry posted from the browser anyway is refused with 403."""
    from selenium.webdriver.common.by import By

    from celery_durable_django.models import Run

    run_id = failed_run(tag, "plain")
    viewer = make_user()
    driver = browser
    login(driver, live_server, viewer, "/admin/celery_durable/deadletter/")
    assert run_id in driver.find_element(By.ID, "result_list").text
    assert not driver.find_elements(By.CSS_SELECTOR, "select[name=action]")
    driver.find_element(By.CSS_SELECTOR, f"a[href*='{run_id}']").click()
    wait_for(lambda: driver.find_elements(By.ID, "cd-timeline"), 10, 0.1, "the run page")
    assert not driver.find_elements(By.CSS_SELECTOR, "#cd-run-actions input, "
                                                     "#cd-edit-arguments")
    status = driver.execute_async_script("""
        const done = arguments[arguments.length - 1];
        const token = document.cookie.split('; ').find(c => c.startsWith('csrftoken='))
                      .split('=')[1];
        const body = new URLSearchParams({csrfmiddlewaretoken: token, index: '0',
            action: 'retry_from_failed_step', _selected_action: arguments[0]});
        fetch('/admin/celery_durable/deadletter/', {method: 'POST', body: body,
              credentials: 'same-origin'}).then(r => done(r.status), e => done(String(e)));
    """, run_id)
    assert status == 403
    time.sleep(0.2)
    assert Run.objects.get(pk=run_id).status == "FAILED"


def test_the_run_page_and_the_list_follow_a_run_without_a_reload(django_worker, live_server,
                                                                 browser, tag, make_user):
    """A waiting run's page and the runs list refresh themselves: once the event arrives and
    the worker finishes the run, both show it succeeded, the step table gains the wait's
    outcome, and the pages were never reloaded (a marker set in each survives)."""
    from django_project.tasks import approval
    from selenium.webdriver.common.by import By

    from celery_durable import send_event
    from celery_durable_django.models import Run

    result = approval.delay(tag, 4242)
    wait_for(lambda: Run.objects.filter(pk=result.id, status="WAITING").exists(), 30, 0.1,
             "the run to wait for its event")
    driver = browser
    login(driver, live_server, make_user(), f"/admin/celery_durable/run/{result.id}/change/")
    assert "Waiting" in driver.find_element(By.CSS_SELECTOR, ".field-status_display").text
    driver.execute_script("window.cdNoReload = 'page';")
    list_window = driver.current_window_handle
    driver.switch_to.new_window("tab")
    driver.get(f"{live_server}/admin/celery_durable/run/?task=django_project.tasks.approval")
    row = f"//tr[th/a[text()='{result.id}']]"
    assert "Waiting" in driver.find_element(By.XPATH, row).text
    driver.execute_script("window.cdNoReload = 'list';")

    assert send_event("approval", key=4242, payload="yes", app=approval.app) == 1
    wait_for(lambda: Run.objects.filter(pk=result.id, status="SUCCEEDED").exists(), 30, 0.1,
             "the worker to finish the run")
    wait_for(lambda: "Succeeded" in driver.find_element(
        By.XPATH, f"{row}/td[contains(@class, 'field-status_display')]").text, 15, 0.2,
        "the list to show the run succeeded")
    assert driver.execute_script("return window.cdNoReload") == "list"

    driver.close()
    driver.switch_to.window(list_window)
    wait_for(lambda: "Succeeded" in driver.find_element(
        By.CSS_SELECTOR, ".field-status_display").text, 15, 0.2,
        "the run page to show the run succeeded")
    steps = driver.find_element(By.ID, "cd-timeline").text
    assert "wait_for_event:approval#0" in steps and "yes" in steps, steps
    assert "Waiting" not in steps
    assert driver.execute_script("return window.cdNoReload") == "page"


def test_waterfall_tag_filter_waits_and_a_confirmed_bulk_cancel_at_1400_px(
        django_worker, live_server, browser, tag, make_user):
    """At 1,400 px neither the runs list nor the dead letters scroll sideways; the tag filter
    narrows the list; a run whose step failed once and then slept shows both attempts and
    the sleep on its waterfall (with the failed attempt's log line); a sleeping run's wait
    is shown as sleeping, not succeeded; a bulk cancel asks "Cancel 1 run?" and acts once
    confirmed."""
    from django_project.tasks import fetch_then_nap
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    from celery_durable_django.models import Run

    failed_run(tag, "a dead letter for the list")
    tagged = fetch_then_nap.apply_async((tag, 1.0), tags=["customer:42", "beta"])
    napping = fetch_then_nap.delay(f"{tag}-long", 3600)
    wait_for(lambda: Run.objects.filter(pk=tagged.id, status="SUCCEEDED").exists(), 60, 0.2,
             "the tagged run to finish")
    wait_for(lambda: Run.objects.filter(pk=napping.id, status="SLEEPING").exists(), 60, 0.2,
             "the other run to sleep")
    driver = browser
    driver.set_window_size(1400, 1000)
    login(driver, live_server, make_user("cancel_run"), "/admin/celery_durable/run/")
    overflow = driver.execute_script(
        "return document.documentElement.scrollWidth - document.documentElement.clientWidth")
    assert overflow <= 0, f"the runs list scrolls sideways by {overflow} px at 1,400 px"
    driver.get(f"{live_server}/admin/celery_durable/deadletter/")
    assert "amount must be positive" in driver.find_element(By.ID, "result_list").text
    overflow = driver.execute_script(
        "return document.documentElement.scrollWidth - document.documentElement.clientWidth")
    assert overflow <= 0, f"the dead letters scroll sideways by {overflow} px at 1,400 px"
    driver.get(f"{live_server}/admin/celery_durable/run/")
    driver.find_element(By.CSS_SELECTOR, "details[data-filter-title='tag'] a[href*='customer']"
                        ).click()
    wait_for(lambda: "tag=customer" in driver.current_url, 10, 0.1, "the tag filter")
    listed = driver.find_element(By.ID, "result_list").text
    assert tagged.id in listed and napping.id not in listed

    driver.find_element(By.CSS_SELECTOR, f"a[href*='{tagged.id}']").click()
    wait_for(lambda: driver.find_elements(By.ID, "cd-waterfall"), 10, 0.1, "the waterfall")
    bars = [b.get_attribute("class").split()[-1] for b in
            driver.find_elements(By.CSS_SELECTOR, "#cd-waterfall .cd-wf-bar")]
    assert bars == ["cd-wf-failed", "cd-wf-succeeded", "cd-wf-waited", "cd-wf-succeeded"]
    labels = driver.find_element(By.ID, "cd-waterfall").text
    assert "flaky_fetch#0" in labels and "attempt 1 failed" in labels and "sleep#0" in labels
    driver.find_element(By.CSS_SELECTOR, "#cd-waterfall .cd-wf-logs summary").click()
    assert "gateway timed out" in driver.find_element(By.CSS_SELECTOR,
                                                      "#cd-waterfall .cd-wf-logs pre").text
    shot(driver, "admin-run-waterfall")

    driver.get(f"{live_server}/admin/celery_durable/run/{napping.id}/change/")
    sleep_row = driver.find_element(By.ID, "cd-step-1").text
    assert "Sleeping" in sleep_row and "sleeping until" in sleep_row
    assert "Succeeded" not in sleep_row

    driver.get(f"{live_server}/admin/celery_durable/run/?status=SLEEPING"
               f"&task=django_project.tasks.fetch_then_nap")
    driver.find_element(By.ID, "action-toggle").click()
    Select(driver.find_element(By.NAME, "action")).select_by_value("cancel_runs")
    driver.find_element(By.CSS_SELECTOR, "button[name=index]").click()
    wait_for(lambda: "Cancel 1 run?" in driver.page_source, 10, 0.1, "the confirmation")
    assert napping.id in driver.page_source
    assert Run.objects.get(pk=napping.id).status == "SLEEPING"  # nothing done yet
    shot(driver, "admin-confirm-cancel")
    driver.find_element(By.ID, "cd-confirm").click()
    wait_for(lambda: Run.objects.get(pk=napping.id).status == "CANCELLED", 10, 0.1,
             "the run to be cancelled")


def test_a_diverged_run_shows_both_sequences_and_is_retried_with_the_patched_code(
        django_worker, live_server, browser, tag, make_user):
    """A run waiting for an event is dead-lettered by NonDeterministicStepError when the
    code inserts a step before its wait. Its page shows the recorded steps beside the
    current code's, the difference marked, and offers no retry with that code; once the
    change is behind patched() the page says the code replays the run and "Retry with the
    current code" resumes it from its failed position: no completed step runs again."""
    from django_project.celery import app
    from django_project.tasks import _counters, dispatch
    from selenium.webdriver.common.by import By

    from celery_durable import send_event
    from celery_durable_django.models import Run

    def status() -> str | None:
        return Run.objects.filter(pk=run_id).values_list("status", flat=True).first()

    _counters.set(f"{tag}:code", "v1")
    run_id = dispatch.delay(tag).id
    wait_for(lambda: status() == "WAITING", 30, 0.1, "the run to wait")
    _counters.set(f"{tag}:code", "v2-unsafe")  # the deploy that forgot patched()
    send_event("shipped", key=tag, app=app)
    wait_for(lambda: status() == "FAILED", 30, 0.1, "the run to be dead-lettered")

    driver = browser
    login(driver, live_server, make_user("retry_run"),
          f"/admin/celery_durable/run/{run_id}/change/")
    panel = driver.find_element(By.ID, "cd-code-check")
    assert "The current code still diverges at position 1" in panel.text
    differs = driver.find_element(By.CSS_SELECTOR, "#cd-code-check tr.cd-differs").text
    assert "wait_for_event:shipped#0" in differs and "note#1" in differs
    assert not driver.find_elements(By.ID, "cd-retry_with_the_current_code")
    shot(driver, "admin-run-diverged")

    _counters.set(f"{tag}:code", "v2-patched")  # the fix: the check behind patched()
    driver.refresh()
    wait_for(lambda: "replays this run's recorded steps" in
             driver.find_element(By.ID, "cd-code-check").text, 10, 0.1, "the check to pass")
    assert not driver.find_elements(By.CSS_SELECTOR, "#cd-code-check tr.cd-differs")
    driver.find_element(By.ID, "cd-retry_with_the_current_code").click()
    wait_for(lambda: driver.find_elements(By.ID, "cd-confirm"), 10, 0.1, "the confirmation")
    assert "Retry 1 run with the current code?" in driver.page_source
    driver.find_element(By.ID, "cd-confirm").click()
    wait_for(lambda: "re-triggered with the current code" in driver.page_source, 10, 0.1,
             "the report")
    wait_for(lambda: status() == "SUCCEEDED", 30, 0.1, "the run to succeed")
    run = Run.objects.get(pk=run_id)
    assert json.loads(run.result) == ["packed", "labelled"]  # v1's path: no fraud check
    assert int(_counters.get(f"{tag}:note")) == 2  # packed once, labelled once
    assert list(run.steps.order_by("position").values_list("key", flat=True)) == [
        "note#0", "wait_for_event:shipped#0", "note#1"]


def test_an_operator_completes_a_wait_token_from_the_admin(django_worker, live_server, browser,
                                                            tag, make_user, client_for):
    """The wait tokens list shows a pending token with its run; an operator with the
    permission completes it with a JSON payload (a <script> in it is shown as text), the run
    finishes with it; a user without the permission has no action and gets 403."""
    from django_project.tasks import _counters, token_approval
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    from celery_durable_django.models import Run, WaitToken

    run_id = token_approval.delay(tag).id
    wait_for(lambda: Run.objects.filter(pk=run_id, status="WAITING").exists(), 30, 0.1,
             "the run to wait")
    token_id = _counters.get(f"{tag}:token_url").decode().rsplit("/", 1)[-1]
    assert WaitToken.objects.get(pk=token_id).run_id == run_id
    viewer = client_for(make_user())
    assert viewer.get(f"/admin/celery_durable/waittoken/{token_id}/complete/").status_code == 403

    driver = browser
    login(driver, live_server, make_user("view_waittoken", "complete_wait_token"),
          "/admin/celery_durable/waittoken/?state=pending")
    row = driver.find_element(By.XPATH, f"//tr[.//a[contains(@href, '{token_id}')]]")
    assert "Pending" in row.text and run_id in row.text
    shot(driver, "admin-wait-tokens")
    row.find_element(By.CSS_SELECTOR, "input.action-select").click()
    Select(driver.find_element(By.NAME, "action")).select_by_value("complete_with_payload")
    driver.find_element(By.NAME, "index").click()
    wait_for(lambda: driver.find_elements(By.NAME, "payload"), 10, 0.1, "the completion form")
    driver.find_element(By.NAME, "payload").send_keys(
        json.dumps({"approved": True, "note": "<script>window.__pwned = 1</script>"}))
    driver.find_element(By.ID, "cd-complete-token-submit").click()
    wait_for(lambda: "run(s) resumed" in driver.page_source, 10, 0.1, "the report")
    wait_for(lambda: Run.objects.filter(pk=run_id, status="SUCCEEDED").exists(), 30, 0.1,
             "the run to finish")
    assert json.loads(Run.objects.get(pk=run_id).result)["decision"]["approved"] is True
    payload = driver.find_element(By.CSS_SELECTOR, ".field-payload_display").text
    assert "<script>window.__pwned = 1</script>" in payload
    assert driver.execute_script("return window.__pwned") is None
    driver.get(f"{live_server}/admin/celery_durable/waittoken/?state=completed")
    assert token_id in driver.find_element(By.ID, "result_list").text
