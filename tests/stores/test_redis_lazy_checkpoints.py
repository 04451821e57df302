"""RedisStore.begin decodes checkpoints lazily: same records as get_run, errors named."""

from __future__ import annotations

import dataclasses
import os
import uuid
from collections.abc import Callable, Iterator

import pytest
import redis
from redis_stores import redis_store

from celery_durable.errors import CorruptCheckpointError
from celery_durable.records import (
    ErrorInfo,
    RunStatus,
    StepRecord,
    StepStatus,
    WaitInfo,
    succeeded_value,
)
from celery_durable.stores.redis import RedisStore
from celery_durable.stores.redis._codec import parse_begin, parse_run

COMMON = {"task": "t", "args": "[1]", "kwargs": '{"a": 2}', "options": {"queue": "q"},
          "owner": "h:1:1", "lease_ttl": 30.0}


@pytest.fixture(params=[False, True], ids=["bytes", "decoded"])
def store(request: pytest.FixtureRequest) -> Iterator[RedisStore]:
    client = redis.Redis.from_url(os.environ["TEST_REDIS_URL"], decode_responses=request.param)
    with redis_store(client, "lazy") as store:
        yield store


def _flat(store: RedisStore, run_id: str) -> list[object]:
    raw = store.client.hgetall(store.run_key(run_id))
    return [x for pair in raw.items() for x in pair]


def test_begin_reads_what_get_run_reads(store: RedisStore) -> None:
    run_id = uuid.uuid4().hex
    b = store.begin(run_id, **COMMON)
    written = [StepRecord(pos, f"s#{pos}", "s", StepStatus.SUCCEEDED, value=f'"é{pos}"',
                          started_at=1.5, finished_at=2.5) for pos in range(3)]
    for record in written:
        assert store.save_step(run_id, b.token, record)
    failed = StepRecord(3, "f#0", "f", StepStatus.RETRYING, 2,
                        error=ErrorInfo("ValueError", "no <b>", "tb", ["a log line"]))
    assert store.park(run_id, b.token, status=RunStatus.RETRYING, delay=0, due_in=60,
                      step=failed)
    wait = WaitInfo(kind="event", step="approval#0", position=4, wait_id=1, until=None,
                    event="approval", key="doc-1", after=0)
    again = store.begin(run_id, **{**COMMON, "owner": "h:2:2"})
    assert store.suspend(run_id, again.token, status=RunStatus.WAITING, wait=wait)
    flat = _flat(store, run_id)
    eager = parse_run(run_id, flat)
    run, lazy = parse_begin(run_id, flat)
    assert run == dataclasses.replace(eager, steps=[])
    assert run.wait is not None and run.wait.event == "approval" and run.options == {"queue": "q"}
    assert len(lazy) == 4 and list(lazy) == [0, 1, 2, 3]
    assert [lazy[p] for p in lazy] == eager.steps == [*written, failed]
    assert lazy.get(9) is None and 9 not in lazy and 3 in lazy


def test_a_corrupt_checkpoint_is_named_when_replay_reaches_it(store: RedisStore) -> None:
    run_id = uuid.uuid4().hex
    b = store.begin(run_id, **COMMON)
    for pos in range(10):
        assert store.save_step(run_id, b.token, StepRecord(pos, f"s#{pos}", "s",
                                                           StepStatus.SUCCEEDED, value="1"))
    store.client.hset(store.run_key(run_id), "c:5", '{"k":"s#5","n":')
    assert store.park(run_id, b.token, status=RunStatus.RETRYING, delay=0, due_in=60)
    again = store.begin(run_id, **{**COMMON, "owner": "h:2:2"})
    assert again.outcome == "acquired"
    assert [again.checkpoints[p].key for p in range(5)] == [f"s#{p}" for p in range(5)]
    with pytest.raises(CorruptCheckpointError, match=f"run {run_id}: .*position 5"):
        again.checkpoints.get(5)


def test_new_records_join_the_mapping(store: RedisStore) -> None:
    run_id = uuid.uuid4().hex
    b = store.begin(run_id, **COMMON)
    assert store.save_step(run_id, b.token, StepRecord(0, "s#0", "s", StepStatus.SUCCEEDED,
                                                       value="1"))
    again = store.begin(run_id, **{**COMMON, "owner": "h:1:1"})
    cps = again.checkpoints
    assert list(cps) == [0]
    cps[1] = StepRecord(1, "s#1", "s", StepStatus.SUCCEEDED, value="2")
    assert list(cps) == [0, 1] and cps[1].value == "2"
    del cps[0]
    assert list(cps) == [1] and cps.get(0) is None


#: Names a byte comparison could get wrong: JSON escapes, non-ASCII, '#', a status word.
ODD_NAMES = ["s", 'quo"te', "back\\slash", "naïve ✓", "a#b", ',"s":"succeeded",', "tab\tnl\n",
             "sl/ash", "lone\ud800"]


def test_the_replay_shortcut_answers_as_the_records_do(store: RedisStore) -> None:
    """``succeeded_value`` (bytes compared, nothing decoded) agrees with the decoded records."""
    run_id = uuid.uuid4().hex
    b = store.begin(run_id, **COMMON)
    written = [StepRecord(pos, f"{name}#0", name, StepStatus.SUCCEEDED, value=f'"v{pos}"',
                          started_at=1.5, finished_at=2.5) for pos, name in enumerate(ODD_NAMES)]
    written.append(StepRecord(len(written), "empty#0", "empty", StepStatus.SUCCEEDED, value=""))
    written.append(StepRecord(len(written), "oops#0", "oops", StepStatus.FAILED, 3,
                              error=ErrorInfo("ValueError", ',"s":"succeeded",', "tb")))
    for record in written:
        assert store.save_step(run_id, b.token, record)
    retrying = StepRecord(len(written), "flaky#0", "flaky", StepStatus.RETRYING, 2,
                          error=ErrorInfo("OSError", "later", "tb"))
    assert store.park(run_id, b.token, status=RunStatus.RETRYING, delay=0, due_in=60,
                      step=retrying)
    again = store.begin(run_id, **{**COMMON, "owner": "h:2:2"})
    records = {r.position: r for r in [*written, retrying]}
    keys = [r.key for r in records.values()] + ["s#1", "other#0"]
    answers = {(pos, key): again.checkpoints.succeeded_value(pos, key)
               for pos in [*records, 99] for key in keys}
    assert answers == {(pos, key): succeeded_value(records, pos, key)
                       for pos in [*records, 99] for key in keys}
    assert answers[(0, "s#0")] == '"v0"' and answers[(len(ODD_NAMES), "empty#0")] == "null"
    assert sum(answer is not None for answer in answers.values()) == len(ODD_NAMES) + 1


def test_the_replay_shortcut_follows_records_already_in_memory(store: RedisStore) -> None:
    """Once a position is decoded (a read, the chunk decoded ahead) or replaced in memory,
    the shortcut answers from that record, not from the stored bytes."""
    run_id = uuid.uuid4().hex
    b = store.begin(run_id, **COMMON)
    for pos in range(4):
        assert store.save_step(run_id, b.token, StepRecord(pos, f"s#{pos}", "s",
                                                           StepStatus.SUCCEEDED, value=str(pos)))
    assert store.park(run_id, b.token, status=RunStatus.RETRYING, delay=0, due_in=60)
    cps = store.begin(run_id, **{**COMMON, "owner": "h:2:2"}).checkpoints
    cps[1] = StepRecord(1, "s#1", "s", StepStatus.FAILED, 3, error=ErrorInfo("E", "m", "tb"))
    assert cps.succeeded_value(1, "s#1") is None
    assert cps.get(0).value == "0"  # decodes ahead from 0, up to the replaced position 1
    cps[2] = StepRecord(2, "s#2", "s", StepStatus.SUCCEEDED, value="99")
    assert [cps.succeeded_value(p, f"s#{p}") for p in range(4)] == ["0", None, "99", "3"]


def test_a_success_whose_record_is_cut_short_is_not_replayed_by_the_shortcut(
        store: RedisStore) -> None:
    run_id = uuid.uuid4().hex
    b = store.begin(run_id, **COMMON)
    assert store.save_step(run_id, b.token, StepRecord(0, "s#0", "s", StepStatus.SUCCEEDED,
                                                       value="1", started_at=1.5))
    store.client.hset(store.run_key(run_id), "c:0", '{"k":"s#0","n":"s","s":"succeeded","a":1')
    assert store.park(run_id, b.token, status=RunStatus.RETRYING, delay=0, due_in=60)
    again = store.begin(run_id, **{**COMMON, "owner": "h:2:2"})
    assert again.checkpoints.succeeded_value(0, "s#0") is None
    with pytest.raises(CorruptCheckpointError, match=f"run {run_id}: .*position 0"):
        again.checkpoints.get(0)


def _interleave(store: RedisStore, monkeypatch: pytest.MonkeyPatch,
                write: Callable[[], None]) -> None:
    """Make the next begin() run ``write`` between its BEGIN script and its HGETALL."""
    send = store._send

    def interleaved(*commands: tuple[object, ...]) -> list[object]:
        monkeypatch.setattr(store, "_send", send)  # once: later calls go straight through
        script_reply = send(commands[0])
        write()
        return script_reply + send(*commands[1:])

    monkeypatch.setattr(store, "_send", interleaved)


def _parked(store: RedisStore) -> str:
    run_id = uuid.uuid4().hex
    first = store.begin(run_id, **COMMON)
    assert store.save_step(run_id, first.token, StepRecord(0, "s#0", "s", StepStatus.SUCCEEDED,
                                                           value='"done"'))
    assert store.park(run_id, first.token, status=RunStatus.RETRYING, delay=0, due_in=60)
    return run_id


@pytest.mark.parametrize("competing_write", ["steal", "delete", "same-token-other-owner"])
def test_a_write_between_the_begin_script_and_its_read_is_told_busy(
        store: RedisStore, monkeypatch: pytest.MonkeyPatch, competing_write: str) -> None:
    """begin() reads the hash with an HGETALL sent behind the BEGIN script; another
    client's write can land between the two. The delivery must not run on a state
    whose lease it does not hold: it is told ``busy`` and gets no checkpoints."""
    run_id = _parked(store)
    key = store.run_key(run_id)
    rival = RedisStore(redis.Redis(connection_pool=store.client.connection_pool),
                       prefix=store.prefix)

    def write() -> None:
        if competing_write == "steal":  # another delivery takes the lease over
            assert rival.begin(run_id, **{**COMMON, "owner": "h:9:9",
                                          "steal_from": "h:2:2"}).outcome == "acquired"
        elif competing_write == "delete":
            store.client.delete(key)
        else:  # cancel, purge, re-created by another delivery: the token comes back
            store.client.hset(key, "owner", "h:9:9")

    _interleave(store, monkeypatch, write)
    late = store.begin(run_id, **{**COMMON, "owner": "h:2:2"})
    assert late.outcome == "busy" and late.token == 0 and len(late.checkpoints) == 0
    monkeypatch.undo()
    if competing_write == "steal":  # the rival's lease stands, the checkpoint is intact
        run = store.get_run(run_id)
        assert run is not None and run.owner == "h:9:9" and run.steps[0].value == '"done"'


@pytest.mark.parametrize("competing_write", ["delete", "retry_run"])
def test_a_finished_run_changed_before_its_read_is_told_busy(
        store: RedisStore, monkeypatch: pytest.MonkeyPatch, competing_write: str) -> None:
    """The script found the run finished; if it is deleted (retention, purge) or reset
    (``retry_run``) before the hash is read, the delivery is told ``busy``, not handed
    an empty or PENDING record as a finished one."""
    run_id = uuid.uuid4().hex
    b = store.begin(run_id, **COMMON)
    assert store.finish(run_id, b.token, status=RunStatus.FAILED,
                        error=ErrorInfo("ValueError", "boom"))

    def write() -> None:
        if competing_write == "delete":
            store.client.delete(store.run_key(run_id))
        else:
            assert store.reset_run(run_id, from_start=False) is not None

    _interleave(store, monkeypatch, write)
    assert store.begin(run_id, **{**COMMON, "owner": "h:2:2"}).outcome == "busy"


def test_a_corrupt_run_whose_lease_was_lost_before_the_read_is_not_dead_lettered(
        store: RedisStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """Only the lease holder dead-letters a corrupt run: if another delivery took the lease
    between the script and the read, this one writes nothing and is told ``busy``."""
    run_id = _parked(store)
    rival = RedisStore(redis.Redis(connection_pool=store.client.connection_pool),
                       prefix=store.prefix)

    def write() -> None:
        assert rival.begin(run_id, **{**COMMON, "owner": "h:9:9",
                                      "steal_from": "h:2:2"}).outcome == "acquired"
        store.client.hset(store.run_key(run_id), "created", "not a number")

    _interleave(store, monkeypatch, write)
    assert store.begin(run_id, **{**COMMON, "owner": "h:2:2"}).outcome == "busy"
    monkeypatch.undo()
    status, owner = store.client.hmget(store.run_key(run_id), "status", "owner")
    assert (status, owner) in ((b"RUNNING", b"h:9:9"), ("RUNNING", "h:9:9"))
