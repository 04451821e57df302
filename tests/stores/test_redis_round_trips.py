"""RedisStore cost model: resuming is one round trip, each checkpoint one write."""

from __future__ import annotations

import os
import uuid

import redis

from celery_durable.records import RunStatus, StepRecord, StepStatus
from celery_durable.stores.redis import RedisStore


class CountingConnection(redis.Connection):
    """A real connection that counts the requests it sends (a pipeline is one)."""

    sent = 0

    def send_packed_command(self, command, check_health=True):  # type: ignore[no-untyped-def]
        CountingConnection.sent += 1
        return super().send_packed_command(command, check_health)


def round_trips(action):  # type: ignore[no-untyped-def]
    before = CountingConnection.sent
    value = action()
    return CountingConnection.sent - before, value


def test_resume_is_one_round_trip_and_each_checkpoint_one_write() -> None:
    """begin (with 64 checkpoints), save_step, save_steps (four at once), park and finish
    each cost one round trip."""
    pool = redis.ConnectionPool.from_url(os.environ["TEST_REDIS_URL"],
                                         connection_class=CountingConnection)
    client = redis.Redis(connection_pool=pool)
    prefix = f"{os.environ['TEST_PREFIX']}trips-{uuid.uuid4().hex[:8]}:"
    store = RedisStore(client, prefix=prefix)
    run_id = f"run-{uuid.uuid4().hex}"
    try:
        common = {"task": "t", "args": "[]", "kwargs": "{}", "options": {}, "owner": "h:1:1",
                  "lease_ttl": 30.0}
        store.begin(f"warm-{run_id}", **common)  # connects the fast lane (hot path)
        client.ping()  # connects the pool (park and the other control paths)
        trips, b = round_trips(lambda: store.begin(run_id, **common))
        assert trips == 1 and b.outcome == "acquired"
        for pos in range(60):
            record = StepRecord(pos, f"s#{pos}", "s", StepStatus.SUCCEEDED, value=f'"{pos}"')
            trips, ok = round_trips(lambda r=record: store.save_step(run_id, b.token, r))
            assert (trips, ok) == (1, True)
        together = [StepRecord(pos, f"s#{pos}", "s", StepStatus.SUCCEEDED, value=f'"{pos}"')
                    for pos in range(60, 64)]  # async steps that finished together
        trips, oks = round_trips(lambda: store.save_steps(run_id, b.token, together))
        assert (trips, oks) == (1, [True] * 4)
        trips, ok = round_trips(lambda: store.park(run_id, b.token, status=RunStatus.RETRYING,
                                                   delay=0, due_in=60))
        assert (trips, ok) == (1, True)
        trips, again = round_trips(lambda: store.begin(run_id, **{**common, "owner": "h:2:2"}))
        assert trips == 1
        assert again.outcome == "acquired" and len(again.steps) == 64
        trips, ok = round_trips(lambda: store.finish(run_id, again.token,
                                                     status=RunStatus.SUCCEEDED, result='"r"'))
        assert (trips, ok) == (1, True)
    finally:
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
        if keys:
            client.delete(*keys)
        client.close()
        pool.disconnect()
