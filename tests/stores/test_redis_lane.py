"""RedisStore's fast lane: the hot path bypasses redis-py's client layer, safely.

Each test drives a real Redis: the lane's connection is killed from another
connection, the scripts are flushed, a read is interrupted, the process forks.
Afterwards the store must still write every checkpoint exactly where it belongs
and never read a reply out of turn.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from redis_stores import redis_store

from celery_durable.records import RunStatus, StepRecord, StepStatus
from celery_durable.stores.redis import RedisStore

COMMON: dict[str, Any] = {"task": "t", "args": "[]", "kwargs": "{}", "options": {},
                          "owner": "h:1:1", "lease_ttl": 30.0}


class CountingClient(redis.Redis):
    """A real client that counts the commands sent through its client layer."""

    layer_calls = 0

    def execute_command(self, *args: Any, **options: Any) -> Any:
        CountingClient.layer_calls += 1
        return super().execute_command(*args, **options)

    def pipeline(self, *args: Any, **kwargs: Any) -> Any:
        CountingClient.layer_calls += 1
        return super().pipeline(*args, **kwargs)


@pytest.fixture()
def store() -> Iterator[RedisStore]:
    with redis_store(CountingClient.from_url(os.environ["TEST_REDIS_URL"]), "lane") as store:
        yield store


def _step(pos: int) -> StepRecord:
    return StepRecord(pos, f"s#{pos}", "s", StepStatus.SUCCEEDED, value=f'"v{pos}"')


def _lane_client_id(store: RedisStore) -> int:
    (reply,) = store._lane.call([b"*2\r\n$6\r\nCLIENT\r\n$2\r\nID\r\n"])
    return int(reply)


def _values(store: RedisStore, run_id: str) -> list[str | None]:
    run = store.get_run(run_id)
    assert run is not None
    return [s.value for s in run.steps]


def test_begin_steps_and_finish_skip_the_client_layer(store: RedisStore) -> None:
    run_id = uuid.uuid4().hex
    before = CountingClient.layer_calls
    b = store.begin(run_id, **COMMON)
    assert b.outcome == "acquired"
    for pos in range(5):
        assert store.save_step(run_id, b.token, _step(pos))
    assert store.finish(run_id, b.token, status=RunStatus.SUCCEEDED, result='"done"')
    assert CountingClient.layer_calls == before
    run = store.get_run(run_id)
    assert run is not None and run.status is RunStatus.SUCCEEDED and run.result == '"done"'
    assert [s.value for s in run.steps] == [f'"v{p}"' for p in range(5)]
    # The sorted sets written beside the scripts are the same as the client path's.
    assert store.client.zscore(store._runs_key, run_id) is not None
    assert store.client.zscore(store._due_key, run_id) is None


def test_a_stale_token_is_refused_on_the_lane(store: RedisStore) -> None:
    run_id = uuid.uuid4().hex
    b = store.begin(run_id, **COMMON)
    assert store.save_step(run_id, b.token, _step(0))
    assert not store.save_step(run_id, b.token - 1, _step(1))
    assert _values(store, run_id) == ['"v0"']


def test_a_killed_lane_connection_falls_back_and_reconnects(store: RedisStore) -> None:
    run_id = uuid.uuid4().hex
    b = store.begin(run_id, **COMMON)
    first = _lane_client_id(store)
    store.client.client_kill_filter(_id=first)
    assert store.save_step(run_id, b.token, _step(0))  # the client path wrote it
    assert store.save_step(run_id, b.token, _step(1))  # the lane again, on a new connection
    assert _lane_client_id(store) != first
    assert _values(store, run_id) == ['"v0"', '"v1"']


def test_flushed_scripts_are_reloaded(store: RedisStore) -> None:
    run_id = uuid.uuid4().hex
    b = store.begin(run_id, **COMMON)
    store.client.script_flush()
    assert store.save_step(run_id, b.token, _step(0))
    store.client.script_flush()
    assert store.finish(run_id, b.token, status=RunStatus.SUCCEEDED, result='"r"')
    store.client.script_flush()
    assert store.begin(uuid.uuid4().hex, **COMMON).outcome == "acquired"
    assert _values(store, run_id) == ['"v0"']


def test_an_error_reply_is_raised_and_the_connection_stays_in_step(store: RedisStore) -> None:
    run_id = uuid.uuid4().hex
    b = store.begin(run_id, **COMMON)
    store.client.delete(store.run_key(run_id))
    store.client.set(store.run_key(run_id), "not a hash")
    with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
        store.save_step(run_id, b.token, _step(0))
    other = uuid.uuid4().hex
    ob = store.begin(other, **COMMON)
    assert ob.outcome == "acquired" and ob.run.id == other
    assert store.save_step(other, ob.token, _step(0))
    assert _values(store, other) == ['"v0"']


def test_an_interrupted_read_never_leaves_a_reply_behind(store: RedisStore,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """A soft time limit firing between send and read must not shift later replies."""
    run_id = uuid.uuid4().hex
    b = store.begin(run_id, **COMMON)
    _lane_client_id(store)
    conn = store._lane._idle[-1][1]  # the connection the next call takes
    original = conn.read_response

    def interrupted(*args: Any, **kwargs: Any) -> Any:
        monkeypatch.setattr(conn, "read_response", original)
        raise KeyboardInterrupt

    monkeypatch.setattr(conn, "read_response", interrupted)
    with pytest.raises(KeyboardInterrupt):
        store.save_step(run_id, b.token, _step(0))
    # Step 0 reached Redis; its reply was never read. The next call must get its own.
    assert store.save_step(run_id, b.token, _step(1))
    assert not store.save_step(run_id, b.token + 5, _step(2))
    assert _values(store, run_id) == ['"v0"', '"v1"']


def test_a_forked_child_never_shares_the_parents_connection(store: RedisStore) -> None:
    run_id = uuid.uuid4().hex
    b = store.begin(run_id, **COMMON)
    parent_id = _lane_client_id(store)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        code = 1
        try:
            child_id = _lane_client_id(store)
            ok = store.save_step(run_id, b.token, _step(1))
            os.write(write, f"{child_id} {int(ok)}".encode())
            code = 0
        finally:
            os._exit(code)
    os.close(write)
    child_id, ok = os.read(read, 100).decode().split()
    os.close(read)
    assert os.waitpid(pid, 0)[1] == 0
    assert int(child_id) != parent_id and ok == "1"
    assert _lane_client_id(store) == parent_id
    assert store.save_step(run_id, b.token, _step(2))
    assert _values(store, run_id) == ['"v1"', '"v2"']


@pytest.mark.parametrize("args", [
    ("EVALSHA", "a" * 40, 1, "durable:run:{x}", 7, 0, '{"k":"é#0"}', ""),
    ("ZADD", "due", 1763780000.123456, "run-1"),
    ("ZADD", "runs", "NX", 1e-7, b"\x00\xff raw bytes"),
    ("SET", "k", -3, "line\r\nbreak"),
    ("SET", "k", 2**70, -0.0, 1e300),
])
def test_pack_matches_redis_py(args: tuple[Any, ...]) -> None:
    """The lane's packer (hiredis's, and the pure-Python one without it) writes exactly what
    redis-py would send for the same arguments."""
    from celery_durable.stores.redis._lane import pack, pack_python

    conn = redis.Connection()
    expected = b"".join(conn.pack_command(*args))
    assert pack(*args) == expected
    assert pack_python(*args) == expected


def test_pack_takes_what_hiredis_refuses() -> None:
    """An argument hiredis does not pack (a bool) is packed as its repr, as before."""
    from celery_durable.stores.redis._lane import pack, pack_python

    assert pack("SET", "k", True) == pack_python("SET", "k", True) == (
        b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$4\r\nTrue\r\n")


def test_threads_never_share_a_connection_mid_call(store: RedisStore) -> None:
    """8 threads checkpointing their own runs at once: every reply lands with its caller."""
    import threading

    runs = {uuid.uuid4().hex: 0 for _ in range(8)}
    tokens = {run_id: store.begin(run_id, **COMMON).token for run_id in runs}
    errors: list[BaseException] = []

    def work(run_id: str) -> None:
        try:
            for pos in range(150):
                assert store.save_step(run_id, tokens[run_id], _step(pos))
                # A stale token must be refused, on whichever connection this lands.
                assert not store.save_step(run_id, tokens[run_id] + 1, _step(pos))
        except BaseException as exc:  # reported below, in the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(run_id,)) for run_id in runs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    for run_id in runs:
        assert _values(store, run_id) == [f'"v{p}"' for p in range(150)]
    assert 1 <= len(store._lane._idle) <= len(runs)


def test_a_hiredis_without_pack_command_falls_back_to_the_python_packer() -> None:
    """hiredis before 2.2 has no ``pack_command``: the lane still imports and packs."""
    import subprocess
    import sys

    code = ("import hiredis; delattr(hiredis, 'pack_command'); "
            "from celery_durable.stores.redis import _lane as lane, store; "
            "assert lane._pack_c is None; "
            "assert lane.pack('SET', 'k', 1.5) == lane.pack_python('SET', 'k', 1.5); "
            "print('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, check=False)
    assert out.stdout.strip() == "ok", out.stderr[-2000:]


def test_the_setting_turns_the_lane_off_and_the_client_path_does_the_work() -> None:
    """``durable_redis_fast_lane = False``: every hot-path command goes through redis-py."""
    from celery import Celery

    from celery_durable.stores import get_store

    app = Celery("no-lane", set_as_current=False, broker="memory://")
    app.conf.durable_store = os.environ["TEST_REDIS_URL"]
    app.conf.durable_redis_fast_lane = False
    app.conf.durable_key_prefix = f"lane-off-{uuid.uuid4().hex[:8]}:"
    store = get_store(app)
    assert isinstance(store, RedisStore)
    assert not store._lane.enabled and "off" in (store._lane.reason or "")
    CountingClient.layer_calls = 0
    counted = RedisStore(CountingClient.from_url(os.environ["TEST_REDIS_URL"]),
                         prefix=app.conf.durable_key_prefix, fast_lane=False)
    run_id = f"run-{uuid.uuid4().hex}"
    b = counted.begin(run_id, **COMMON)
    assert counted.save_step(run_id, b.token, _step(0))
    assert counted.finish(run_id, b.token, status=RunStatus.SUCCEEDED, result="1")
    assert CountingClient.layer_calls >= 3  # begin, the checkpoint and finish: all redis-py
    assert _values(counted, run_id) == ['"v0"']
    counted.client.delete(counted.run_key(run_id), f"{counted.prefix}due", f"{counted.prefix}runs")
    counted.close()
    store.close()


def test_a_redis_py_without_the_lanes_internals_keeps_the_lane_off() -> None:
    """The internals the lane relies on are checked when a store is made; one missing (an
    older or newer redis-py) leaves the lane off, named, instead of failing on a step."""
    from celery_durable.stores.redis import _lane

    class Bare(redis.Connection):
        send_packed_command = None  # type: ignore[assignment]

    client = redis.Redis.from_url(os.environ["TEST_REDIS_URL"], connection_class=Bare)
    lane = _lane.FastLane(client)
    assert not lane.enabled
    assert lane.reason == "redis-py lacks connection.send_packed_command"
    assert _lane.unsupported(redis.Redis.from_url(os.environ["TEST_REDIS_URL"])) is None
    client.close()
