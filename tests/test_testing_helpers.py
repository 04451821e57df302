"""``celery_durable.testing``: ``assert_resumable`` through a real worker."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from celery_durable import testing
from celery_durable.engine import _testhooks

pytestmark = pytest.mark.worker

TESTS = Path(__file__).resolve().parent


@pytest.fixture
def worker(tmp_path: Path) -> Iterator[testing.DurableTestWorker]:
    """A crash-ready worker for ``apps.resumable_app`` on this session's queue."""
    w = testing.start_worker("apps.resumable_app", queues=[os.environ["TEST_QUEUE"]],
                             concurrency=1, cwd=TESTS, crash_dir=tmp_path / "crash")
    yield w
    w.stop()


def test_hooks_are_off_without_the_environment_variable() -> None:
    """Outside a test worker the crash hook is None, so run_step pays one attribute check."""
    assert os.environ.get(_testhooks.ENV) is None
    assert _testhooks.active is None


def test_a_deterministic_task_passes_with_a_crash_after_every_step(worker) -> None:
    """Each of the 3 step boundaries is crashed once; every run resumes to the same result."""
    from apps.resumable_app import pipeline

    report = testing.assert_resumable(pipeline, 5)
    assert report.result == {"a": 10, "b": 13, "c": 26}
    assert report.steps == ["double#0", "add#0", "double#1"]
    assert report.boundaries == 3 and len(report.crashed_runs) == 3
    for run_id in report.crashed_runs:  # the crash really happened, each step ran once
        assert worker.executions(run_id) == {"double#0": 1, "add#0": 1, "double#1": 1}
    assert "SIGKILL" in worker.log() or "WorkerLostError" in worker.log() or (
        "exited" in worker.log())


def test_patched_markers_resume_like_steps_with_a_crash_after_each(worker) -> None:
    """patched() in a loop and a child call after it: a crash after every marker and step
    resumes to the same result, each step run once (the markers replay as recorded)."""
    from apps.resumable_app import patched_in_a_loop

    report = testing.assert_resumable(patched_in_a_loop, 4)
    assert report.result == {"bonus": [4, 5], "child": 9}
    assert report.steps == ["patched:bonus#0", "add#0", "patched:bonus#1", "add#1",
                            "call:apps.resumable_app.plus_one_doubled#0"]
    assert report.boundaries == 5 and len(report.crashed_runs) == 5
    for run_id in report.crashed_runs:
        assert worker.executions(run_id) == {"add#0": 1, "add#1": 1}


def test_a_crash_before_the_children_exist_starts_each_child_once(worker) -> None:
    """Crashed right after a map's child ids are checkpointed, the resumed run starts them."""
    from apps.resumable_app import fans_out

    report = testing.assert_resumable(fans_out, 5)
    assert report.result == {"a": 10, "children": [21, 23, 25]}
    assert report.steps == ["double#0", "map:apps.resumable_app.plus_one_doubled#0"]
    assert report.boundaries == 2 and len(report.crashed_runs) == 2
    for run_id in report.crashed_runs:
        assert worker.executions(run_id) == {"double#0": 1}
        for i in range(3):
            assert worker.executions(f"{run_id}~1.{i}") == {"double#0": 1}, (run_id, i)


def test_a_non_deterministic_task_is_caught(worker, tag) -> None:
    """A body that branches on something outside a step fails the check after the crash."""
    from apps.resumable_app import branches_on_the_outside_world

    with pytest.raises(AssertionError, match="NonDeterministicStepError"):
        testing.assert_resumable(branches_on_the_outside_world, tag, 4)


def test_a_side_effect_in_the_body_is_caught(worker, tag, redis_client) -> None:
    """An 'email' sent from the body, not a step, is seen twice by ``observe`` after a crash."""
    from apps.resumable_app import emails_from_the_body

    def emails() -> int:
        return int(redis_client.get(f"{tag}:emails") or 0)

    with pytest.raises(AssertionError, match="side effect done in the task body"):
        testing.assert_resumable(emails_from_the_body, tag, 2, observe=emails)
