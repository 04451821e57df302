"""RedisStore: one hash per run, Lua for every check-and-write under the lease.

Layout (``P`` is the result backend's ``global_keyprefix`` plus
``durable_key_prefix``)::

    P run:{<run id>}   hash: run fields, plus c:<pos> (step meta JSON) and v:<pos> (value)
    P run:{<run id>}:h list: the run's history (HistoryEntry JSON), never read to resume
    P run:{<run id>}:m hash: the run's metadata (name -> JSON)
    P tag:<tag>        sorted set: run id -> creation time, of the runs with that tag
    P ver:<version>    sorted set: run id -> creation time, of the runs of that version
    P due              sorted set: run id -> when the sweeper should look at it
    P runs             sorted set: run id -> creation time (for listing)
    P ev:{<h>}:box     sorted set: the mailbox of one event name and key (``h`` hashes
                       both): seq -> "seq:id:payload", kept ``durable_event_buffer`` s
    P ev:{<h>}:waiters set: ids of the runs waiting (or about to wait) for that event

A run hash also holds its current or last wait: ``wkind wstep wpos wid wuntil
wname wkey wafter`` and ``wres`` (the resolution, written once).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from ...errors import CorruptCheckpointError, InvalidRunStateError, StoreUnavailableError
from ...records import (
    Begin,
    Claim,
    ErrorInfo,
    EventRecord,
    RetryInfo,
    RunRecord,
    RunStatus,
    StepRecord,
    StepStatus,
    WaitInfo,
    begin_outcome,
    claim_action,
    failed_attempt,
)
from ..base import (
    CheckpointStore,
    ChildRuns,
    ConcurrencySlots,
    IdempotencyKeys,
    Retention,
    RunHistory,
    Waits,
    WaitTokens,
)
from ..transitions import reset_note, wake_note
from ._codec import (
    as_dict,
    as_float,
    checkpoint_args,
    parse_begin,
    parse_run,
    text,
)
from ._scripts import SCRIPTS
from .controls import RedisControls
from .listing import RedisRunRecords
from .tokens import RedisTokens

logger = logging.getLogger(__name__)

redis_lib: Any
try:
    import redis as redis_lib

    from ._lane import FastLane, LaneUnavailable, pack
except ImportError:  # pragma: no cover - depends on the installed extras
    redis_lib = None


class RedisStore(RedisControls, RedisRunRecords, RedisTokens, CheckpointStore, Waits, ChildRuns,
                 IdempotencyKeys, ConcurrencySlots, Retention, RunHistory, WaitTokens):
    """Checkpoints in Redis: a standalone server, or a Redis Cluster (``from_cluster_url``)."""

    def __init__(self, client: Any, *, prefix: str = "durable:", fast_lane: bool = True) -> None:
        if redis_lib is None:
            raise StoreUnavailableError("RedisStore needs redis-py: pip install "
                                        "'celery-durable[redis]'")
        self.client = client
        self.prefix = prefix
        #: The server's clock minus this process's (see :meth:`clock`).
        self._offset = 0.0
        self._due_key = f"{prefix}due"
        self._runs_key = f"{prefix}runs"
        self._scripts = {name: client.register_script(source)
                         for name, source in SCRIPTS.items()}
        self._lane = FastLane(client, enabled=fast_lane)

    def _send(self, *commands: tuple[Any, ...]) -> list[Any]:
        """The replies to ``commands``, sent in one round trip.

        Over the fast lane (:mod:`.redis_lane`) when it can; else, or when its
        connection failed or Redis lost a script, as a client pipeline
        (:meth:`_pipeline`: redis-py's reconnects, scripts loaded again); one
        command alone goes without a pipeline. A command the lane sent may run
        again on the client path if the connection broke after Redis ran it, as
        with redis-py's own retries: checkpoints are idempotent, a repeated
        ``begin`` answers ``busy`` (the run resumes after its lease expires) and
        a repeated ``finish`` answers that the lease is gone. Any other error
        reply is raised, as the client path would.
        """
        if self._lane.enabled:
            try:
                replies = self._lane.call([pack(*command) for command in commands])
            except LaneUnavailable:
                replies = None
            if replies is not None:
                errors = [r for r in replies if isinstance(r, redis_lib.exceptions.ResponseError)]
                if not errors:
                    return replies
                if not any(isinstance(e, redis_lib.exceptions.NoScriptError) for e in errors):
                    raise errors[0]
        if len(commands) == 1:
            try:
                return [self.client.execute_command(*commands[0])]
            except redis_lib.exceptions.NoScriptError:
                self._load_scripts()
                return [self.client.execute_command(*commands[0])]
        return self._pipeline(lambda pipe: [pipe.execute_command(*c) for c in commands])

    def _script(self, name: str, keys: str | tuple[str, ...], *args: Any) -> tuple[Any, ...]:
        """The EVALSHA command of script ``name`` on ``keys`` (one key or several)."""
        if isinstance(keys, str):
            return ("EVALSHA", self._scripts[name].sha, 1, keys, *args)
        return ("EVALSHA", self._scripts[name].sha, len(keys), *keys, *args)

    def _pipeline(self, build: Callable[[Any], object]) -> list[Any]:
        """Run the commands ``build`` queues in one round trip.

        Scripts are sent as EVALSHA; if the server lost them (restart,
        ``SCRIPT FLUSH``) they are loaded and the pipeline is sent again, which
        is safe because every queued command is idempotent or refused under the
        lease. (redis-py's own pipeline would ask ``SCRIPT EXISTS`` every time.)
        """
        for attempt in (1, 2):
            pipe = self.client.pipeline(transaction=False)
            build(pipe)
            try:
                return list(pipe.execute())
            except redis_lib.exceptions.NoScriptError:
                if attempt == 2:
                    raise
                self._load_scripts()
        raise AssertionError("unreachable")

    def _load_scripts(self) -> None:
        """Load every script again (after a restart or ``SCRIPT FLUSH``)."""
        for script in self._scripts.values():
            script.sha = self.client.script_load(script.script)

    @classmethod
    def from_url(cls, url: str, *, prefix: str = "durable:", fast_lane: bool = True,
                 **options: Any) -> RedisStore:
        """Connect to the Redis at ``url`` (``options`` go to ``redis.Redis.from_url``)."""
        if redis_lib is None:
            raise StoreUnavailableError("RedisStore needs redis-py: pip install "
                                        "'celery-durable[redis]'")
        return cls(redis_lib.Redis.from_url(url, **options), prefix=prefix, fast_lane=fast_lane)

    @classmethod
    def from_cluster_url(cls, url: str, *, prefix: str = "durable:", fast_lane: bool = True,
                         **options: Any) -> RedisStore:
        """Connect to the Redis Cluster that ``redis+cluster://host:port`` names (any node).

        Every script touches one run's keys or one global key (each run's keys share
        the run id as their hash tag), so the store works unchanged on a cluster.
        """
        if redis_lib is None:
            raise StoreUnavailableError("RedisStore needs redis-py: pip install "
                                        "'celery-durable[redis]'")
        from redis.cluster import RedisCluster

        plain = url.replace("+cluster://", "://", 1)
        return cls(RedisCluster.from_url(plain, **options), prefix=prefix, fast_lane=fast_lane)

    def run_key(self, run_id: str) -> str:
        """The hash holding ``run_id``; the run id is its Redis Cluster hash tag."""
        return f"{self.prefix}run:{{{run_id}}}"

    def run_keys(self, run_id: str) -> tuple[str, str, str]:
        """The run's hash, history list and metadata hash (one hash tag)."""
        key = self.run_key(run_id)
        return key, f"{key}:h", f"{key}:m"

    def ping(self) -> None:
        """Raise StoreUnavailableError when Redis does not answer; measure its clock."""
        try:
            sent = time.time()
            seconds, micros = self.client.time()
            cluster_node = (not hasattr(self.client, "get_nodes")  # not a cluster client
                            and self.client.info("cluster").get("cluster_enabled") == 1)
        except Exception as exc:
            raise StoreUnavailableError(f"Redis store unreachable: {exc}") from exc
        if cluster_node:
            raise StoreUnavailableError(
                "the Redis store's server is a Redis Cluster node, reached as a single "
                "server (runs hashed to other nodes would fail with MOVED): set "
                "app.conf.durable_store = 'redis+cluster://<host>:<port>' (any node)")
        # the server read its clock about halfway through the round trip
        self._offset = seconds + micros / 1_000_000 - (sent + time.time()) / 2

    def begin(self, run_id: str, *, task: str, args: str, kwargs: str,
              options: Mapping[str, object], owner: str, lease_ttl: float,
              max_recoveries: int = 5, steal_from: str | None = None,
              tags: Sequence[str] = (), version: str | None = None) -> Begin:
        """See :meth:`CheckpointStore.begin`: one pipelined round trip.

        The BEGIN script decides and takes the lease; the ``HGETALL`` right
        behind it reads the run and its checkpoints. A write can land between
        the two (another delivery stealing the lease, a cancel, a deletion):
        when the hash read is not the state the script decided on (see
        :func:`_read_as_decided`) the delivery is told ``busy`` instead of
        running on a state it does not hold.
        """
        now = self.clock()
        key, history, _ = self.run_keys(run_id)
        (outcome, token), flat, *_ = self._send(
            self._script("BEGIN", (key, history), task, args, kwargs,
                         json.dumps(dict(options)), owner, lease_ttl, steal_from or "",
                         max_recoveries,
                         json.dumps(options["headers"]) if options.get("headers") else "",
                         json.dumps(list(tags)) if tags else "", version or ""),
            ("HGETALL", key),
            ("ZADD", self._due_key, now + lease_ttl, run_id),
            ("ZADD", self._runs_key, "NX", now, run_id),
            *self._index(run_id, now, tags, version))
        outcome, token, raw = begin_outcome(text(outcome)), int(token), as_dict(flat)
        try:
            run, checkpoints = parse_begin(run_id, raw, strict=outcome == "acquired")
        except CorruptCheckpointError as exc:
            return self._dead_letter_corrupt(run_id, task, token, raw, exc)
        if not _read_as_decided(outcome, token, owner, run):
            return Begin("busy", run)
        return Begin(outcome, run, token, checkpoints)

    def _dead_letter_corrupt(self, run_id: str, task: str, token: int, raw: dict[Any, Any],
                             exc: CorruptCheckpointError) -> Begin:
        """Dead-letter a run whose hash cannot be read, under the lease just taken.

        Retrying cannot repair bytes. If the lease was lost before the hash was
        read, nothing is written and the delivery is told ``busy``: the holder
        dead-letters it.
        """
        error = ErrorInfo(type(exc).__name__, str(exc))
        if not self.finish(run_id, token, status=RunStatus.FAILED, error=error):
            return Begin("busy", RunRecord(id=run_id, task=task, status=RunStatus.RUNNING))
        # The parent (of a child run) is told by the runner, if its id is readable.
        found = raw.get(b"parent", raw.get("parent"))
        try:
            parent = text(found) or None if found is not None else None
        except UnicodeDecodeError:
            parent = None
        return Begin("dead", RunRecord(id=run_id, task=task, status=RunStatus.FAILED,
                                       error=error, parent=parent), token)

    def save_step(self, run_id: str, token: int, step: StepRecord) -> bool:
        """See :meth:`CheckpointStore.save_step`: one EVALSHA.

        The hot path of every step: sent by :meth:`_send`, over the fast lane
        when it can.
        """
        if failed_attempt(step):
            return bool(self._send(self._script("SAVE_FAILURE", self.run_keys(run_id)[:2], token,
                                                *checkpoint_args(step)))[0])
        return bool(self._send(
            self._script("SAVE_STEP", self.run_key(run_id), token, *checkpoint_args(step)))[0])

    def save_steps(self, run_id: str, token: int, steps: Sequence[StepRecord]) -> list[bool]:
        """See :meth:`CheckpointStore.save_steps`: one SAVE_STEP script per checkpoint, all
        in one round trip (pipelined)."""
        key = self.run_key(run_id)
        replies = self._send(*(self._script("SAVE_STEP", key, token, *checkpoint_args(step))
                               for step in steps))
        return [bool(reply) for reply in replies]

    def park(self, run_id: str, token: int, *, status: RunStatus, delay: float,
             due_in: float, step: StepRecord | None = None, args: str | None = None,
             kwargs: str | None = None,
             options: Mapping[str, object] | None = None) -> bool:
        """See :meth:`CheckpointStore.park`."""
        step_args = checkpoint_args(step) if step is not None else ["", "", ""]
        retrying = (RetryInfo.of(step).to_json()
                    if step is not None and step.status is StepStatus.RETRYING else "")
        ok, _ = self._send(
            self._script("PARK", self.run_keys(run_id)[:2], token, status.value, delay, due_in,
                         *step_args, args or "", kwargs or "",
                         json.dumps(dict(options)) if options is not None else "", retrying),
            ("ZADD", self._due_key, self.clock() + due_in, run_id))
        return bool(ok)

    def finish(self, run_id: str, token: int, *, status: RunStatus,
               result: str | None = None, error: ErrorInfo | None = None,
               failed_step: str | None = None, retention: float = 0) -> bool:
        """See :meth:`CheckpointStore.finish`."""
        err = json.dumps([error.type, error.message, error.traceback]) if error else ""
        ok, _ = self._send(
            self._script("FINISH", self.run_keys(run_id), token, status.value, result or "", err,
                         failed_step or "", retention),
            ("ZREM", self._due_key, run_id))
        return bool(ok)

    def renew(self, leases: Mapping[str, int], lease_ttl: float) -> set[str]:
        """See :meth:`CheckpointStore.renew`: one pipeline for all leases."""
        if not leases:
            return set()
        ids = list(leases)
        replies = self._send(*(self._script("RENEW", self.run_key(run_id), leases[run_id],
                                            lease_ttl) for run_id in ids))
        lost = {run_id for run_id, lease in zip(ids, replies, strict=True) if not lease}
        alive = {run_id: float(lease) for run_id, lease in zip(ids, replies, strict=True)
                 if lease}
        if alive:
            self.client.zadd(self._due_key, alive)
        return lost

    def due_runs(self, limit: int = 100) -> list[str]:
        """See :meth:`CheckpointStore.due_runs`: due by the server's clock (``TIME``)."""
        server_now, *ids = self._scripts["DUE"](keys=[self._due_key], args=[limit])
        self._learn_clock(float(server_now))
        return [text(i) for i in ids]

    def clock(self) -> float:
        """The server's clock, as this process last measured it against its own.

        Only the due set's scores use it (they tell the sweeper when to look; the
        scripts decide by ``TIME``); a worker whose own clock is off still writes
        them in the server's time. Measured at :meth:`ping` and on every sweep.
        """
        return time.time() + self._offset

    def _learn_clock(self, server_now: float) -> None:
        self._offset = server_now - time.time()

    def claim_due(self, run_id: str, *, grace: float, max_recoveries: int) -> Claim:
        """See :meth:`CheckpointStore.claim_due`."""
        reply = self._scripts["CLAIM_DUE"](keys=list(self.run_keys(run_id)[:2]),
                                           args=[grace, max_recoveries])
        action = claim_action(text(reply[0]))
        if action == "gone":
            self.client.zrem(self._due_key, run_id)
            return Claim("gone")
        if action == "later":
            due = as_float(reply[1])
            if due is None:  # not due at all: drop the stray entry
                self.client.zrem(self._due_key, run_id)
            else:
                self.client.zadd(self._due_key, {run_id: due})
            return Claim("later", due_at=due)
        run = parse_run(run_id, reply[1])
        if action == "dead":
            self.client.zrem(self._due_key, run_id)
        elif run.due_at is not None:
            self.client.zadd(self._due_key, {run_id: run.due_at})
        return Claim(action, run)

    def reset_run(self, run_id: str, *, from_start: bool, args: str | None = None,
                  kwargs: str | None = None, grace: float = 300.0,
                  version: str | None = None) -> RunRecord | None:
        """See :meth:`CheckpointStore.reset_run`."""
        note = reset_note(from_start=from_start, new_args=args is not None or kwargs is not None,
                          version=version)
        reply = self._scripts["RESET"](keys=list(self.run_keys(run_id)), args=[
            "1" if from_start else "0", args or "", kwargs or "", grace, note, version or ""])
        action = text(reply[0])
        if action == "missing":
            return None
        if action == "state":
            raise InvalidRunStateError(f"run {run_id} is {text(reply[1])}, not failed or "
                                       "cancelled", run_id=run_id)
        run = parse_run(run_id, reply[1])
        self.client.zadd(self._due_key, {run_id: self.clock() + grace})
        was = text(reply[2])
        if version is not None and version != was:  # listed under its new version
            pipe = self.client.pipeline(transaction=False)
            if was:
                pipe.zrem(self.index_key("ver", was), run_id)
            pipe.zadd(self.index_key("ver", version), {run_id: run.created_at or 0.0})
            pipe.execute()
        return run

    def close(self) -> None:
        """Close the idle fast-lane connections and the connection pool."""
        self._lane.close()
        self.client.close()

    # -- durable waits ---------------------------------------------------------

    def event_keys(self, name: str, key: str) -> tuple[str, str]:
        """The mailbox and waiter-set keys of event ``(name, key)`` (one hash tag)."""
        tag = hashlib.sha1(f"{name}\x00{key}".encode(), usedforsecurity=False).hexdigest()[:24]
        return f"{self.prefix}ev:{{{tag}}}:box", f"{self.prefix}ev:{{{tag}}}:waiters"

    def suspend(self, run_id: str, token: int, *, status: RunStatus, wait: WaitInfo,
                step: StepRecord | None = None) -> bool:
        """See :meth:`CheckpointStore.suspend`: one pipelined round trip."""
        step_args = checkpoint_args(step) if step is not None else ["", "", ""]
        until = "" if wait.until is None else repr(float(wait.until))

        commands = [self._script("SUSPEND", self.run_key(run_id), token, status.value,
                                 *step_args, wait.kind, wait.step, wait.position,
                                 wait.wait_id, until, wait.event or "", wait.key or "",
                                 wait.after)]
        if wait.until is not None:
            commands.append(("ZADD", self._due_key, wait.until, run_id))
        # Without a timeout the run is due for nobody; the sweeper drops the
        # entry ``begin`` left when it comes up.
        return bool(self._send(*commands)[0])

    def _event(self, name: str, key: str, member: Any) -> EventRecord:
        seq, event_id, payload = text(member).split(":", 2)
        return EventRecord(event_id, name, key, payload, int(seq), int(seq) / 1_000_000)

    def register_waiter(self, run_id: str, name: str, key: str, *, after: int,
                        buffer: float) -> EventRecord | None:
        """See :meth:`CheckpointStore.register_waiter`: one EVALSHA."""
        member = self._scripts["REGISTER"](keys=list(self.event_keys(name, key)),
                                           args=[run_id, after, int(buffer * 1_000_000)])
        return self._event(name, key, member) if member else None

    def unregister_waiter(self, run_id: str, name: str, key: str) -> None:
        """See :meth:`CheckpointStore.unregister_waiter`."""
        self.client.srem(self.event_keys(name, key)[1], run_id)

    def post_event(self, name: str, key: str, payload: str, *,
                   buffer: float) -> tuple[EventRecord, list[str]]:
        """See :meth:`CheckpointStore.post_event`: one EVALSHA."""
        event_id = uuid.uuid4().hex
        seq, waiters = self._scripts["POST"](keys=list(self.event_keys(name, key)),
                                             args=[event_id, payload,
                                                   int(max(buffer, 0) * 1_000_000)])
        seq = int(text(seq))
        return (EventRecord(event_id, name, key, payload, seq, seq / 1_000_000),
                sorted(text(w) for w in waiters))

    def deliver_event(self, event: EventRecord, run_ids: Sequence[str], *,
                      grace: float) -> list[RunRecord]:
        """See :meth:`CheckpointStore.deliver_event`: one pipeline for all runs."""
        ids = list(run_ids)
        if not ids:
            return []
        replies = self._send(*(self._script("DELIVER", self.run_key(run_id), event.name,
                                            event.key, event.id, event.seq, event.payload,
                                            grace) for run_id in ids))
        runs, gone = [], []
        for run_id, reply in zip(ids, replies, strict=True):
            action = text(reply[0])
            if action == "publish":
                runs.append(parse_run(run_id, reply[1]))
            elif action == "gone":
                gone.append(run_id)
        pipe = self.client.pipeline(transaction=False)
        if gone:
            pipe.srem(self.event_keys(event.name, event.key)[1], *gone)
        if runs:
            pipe.zadd(self._due_key, {r.id: r.due_at for r in runs if r.due_at is not None})
        if gone or runs:
            pipe.execute()
        return runs

    def wake(self, run_id: str, *, grace: float) -> RunRecord | None:
        """See :meth:`CheckpointStore.wake`."""
        reply = self._scripts["WAKE"](keys=list(self.run_keys(run_id)[:2]), args=[
            grace, wake_note(RunStatus.SLEEPING), wake_note(RunStatus.WAITING)])
        if text(reply[0]) != "publish":
            return None
        run = parse_run(run_id, reply[1])
        if run.due_at is not None:
            self.client.zadd(self._due_key, {run_id: run.due_at})
        return run


def _read_as_decided(outcome: str, token: int, owner: str, run: RunRecord) -> bool:
    """Whether the hash read behind the BEGIN script shows the state the script decided on.

    ``acquired``: the run still holds this delivery's token and owner (a
    steal bumps the token; a cancel, purge and re-creation could bring the
    same token back, not the same owner). ``finished`` and ``dead``: the run
    is still finished (not deleted, nor reset by ``retry_run``). ``busy`` and
    ``early`` change nothing, so any later state is as good.
    """
    if outcome == "acquired":
        return run.token == token and run.owner == owner
    if outcome in ("finished", "dead"):
        return run.status.finished
    return True
