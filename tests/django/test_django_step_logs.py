"""A failed step's last log lines are kept with its error and shown in the admin; the CLI's
``show`` on the Django store (log lines, transactional steps)."""

from __future__ import annotations

import json

import pytest
from harness import wait_for

pytestmark = [pytest.mark.worker, pytest.mark.usefixtures("db")]


def test_failed_step_log_lines_show_on_the_admin_run_page(django_worker, tag, make_user,
                                                          client_for):
    """A real worker's failing step logs 60 lines: its last 50 are stored and the run page
    shows them, escaped, under the step's error."""
    from django_project.tasks import noisy_order

    from celery_durable import get_run
    from celery_durable_django.models import Run, Step

    result = noisy_order.delay(tag, 60)
    wait_for(lambda: Run.objects.filter(pk=result.id, status="FAILED").exists(), 30, 0.1,
             "the run to fail")
    step = Step.objects.get(run_id=result.id, key="noisy_charge#0")
    info = get_run(result.id, app=noisy_order.app)
    logs = info.steps[1].error.logs
    assert len(logs) == 50
    assert f"gateway said <10> for {tag}" in logs[0] and f"<59> for {tag}" in logs[-1]
    assert "INFO django_project.tasks:" in logs[0]
    assert step.error_logs  # stored in its own column

    client = client_for(make_user())
    page = client.get(f"/admin/celery_durable/run/{result.id}/change/").content.decode()
    assert "last 50 log lines" in page
    assert f"gateway said &lt;59&gt; for {tag}" in page
    assert f"gateway said &lt;9&gt; for {tag}" not in page  # only the last 50 are kept


def test_cli_show_with_the_django_store(django_worker, tag):
    """``celery -A django_project durable show`` sets Django up and prints a failed step's
    log lines from the Django database."""
    import os
    import subprocess
    import sys

    from django_project.tasks import noisy_order
    from harness import ROOT

    from celery_durable_django.models import Run

    result = noisy_order.delay(tag, 3)
    wait_for(lambda: Run.objects.filter(pk=result.id, status="FAILED").exists(), 30, 0.1,
             "the run to fail")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "tests"), str(ROOT)])}
    proc = subprocess.run([sys.executable, "-m", "celery", "-A", "django_project", "durable",
                           "show", result.id], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "Status   FAILED" in proc.stdout
    assert "Last 3 log line(s) of noisy_charge#0 (attempt 1):" in proc.stdout
    assert f"gateway said <2> for {tag}" in proc.stdout
    runs = subprocess.run([sys.executable, "-m", "celery", "-A", "django_project", "durable",
                           "runs", "--status", "FAILED", "--json"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)
    assert result.id in {r["id"] for r in json.loads(runs.stdout)}


def test_cli_show_marks_a_transactional_step(django_worker, tag):
    """A real worker's run of one transactional step and one plain step: ``show`` marks the
    first (table and ``--json``), not the second."""
    import os
    import subprocess
    import sys

    from django_project.celery import app
    from harness import ROOT

    from celery_durable_django.models import Run

    result = app.send_task("django_project.tasks.insert_row", args=(tag, True))
    wait_for(lambda: Run.objects.filter(pk=result.id, status="SUCCEEDED").exists(), 30, 0.1,
             "the run to succeed")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "tests"), str(ROOT)])}

    def show(*extra: str) -> str:
        proc = subprocess.run([sys.executable, "-m", "celery", "-A", "django_project",
                               "durable", "show", result.id, *extra], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr
        return proc.stdout

    table = show()
    assert "insert_atomically#0 (transactional)" in table
    assert "note#0" in table and "note#0 (transactional)" not in table
    steps = json.loads(show("--json"))["steps"]
    assert [(s["key"], s["atomic"]) for s in steps] == [("insert_atomically#0", True),
                                                        ("note#0", False)]
