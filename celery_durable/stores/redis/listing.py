"""The run record beyond checkpoints, for :class:`~celery_durable.stores.redis.store.RedisStore`.

Layout, beside each run hash ``P run:{<id>}`` (``P`` is the store's key prefix)::

    P run:{<id>}:h        list: the run's history (JSON entries, the last 1,000)
    P run:{<id>}:m        hash: metadata key -> JSON value
    P tag:<tag>           sorted set: run id -> creation time (runs with that tag)
    P ver:<version>       sorted set: run id -> creation time (runs of that code version)
    P runs                sorted set: run id -> creation time (every run)

``get_run`` and ``list_runs`` read them; ``begin`` never does (resume cost
does not grow with a run's history).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ...records import HistoryEntry, RunRecord, RunStatus, readable_history
from ._codec import as_dict, parse_metadata, parse_run, text


class RedisRunRecords:
    """Run listing, history, metadata and replay links for RedisStore (mixed into it)."""

    client: Any
    prefix: str
    _runs_key: str

    if TYPE_CHECKING:  # provided by RedisStore
        def run_key(self, run_id: str) -> str: ...
        def run_keys(self, run_id: str) -> tuple[str, str, str]: ...
        def _send(self, *commands: tuple[Any, ...]) -> list[Any]: ...
        def _script(self, name: str, keys: str | tuple[str, ...],
                    *args: Any) -> tuple[Any, ...]: ...
        def _read_runs(self, run_ids: Sequence[str],
                       fields: Sequence[str]) -> list[RunRecord | None]: ...

    def index_key(self, kind: str, value: str) -> str:
        """The sorted set of the runs with tag (``kind="tag"``) or version (``"ver"``) ``value``."""
        return f"{self.prefix}{kind}:{value}"

    def _index(self, run_id: str, now: float, tags: Sequence[str],
               version: str | None) -> list[tuple[Any, ...]]:
        """The commands that list a new run under its tags and version."""
        keys = [self.index_key("tag", t) for t in tags]
        if version:
            keys.append(self.index_key("ver", version))
        return [("ZADD", k, "NX", now, run_id) for k in keys]

    def get_run(self, run_id: str) -> RunRecord | None:
        """See :meth:`CheckpointStore.get_run`."""
        key, _, meta = self.run_keys(run_id)
        flat, metadata = self._send(("HGETALL", key), ("HGETALL", meta))
        raw = as_dict(flat)
        if not raw:
            return None
        run = parse_run(run_id, raw)
        run.metadata = parse_metadata(run, as_dict(metadata))
        return run

    def list_runs(self, *, status: RunStatus | None = None, task: str | None = None,
                  tag: str | None = None, version: str | None = None,
                  limit: int = 100) -> list[RunRecord]:
        """See :meth:`CheckpointStore.list_runs`: scans an index newest first.

        The index of the tag (or else the version) when one is asked for, else
        that of every run; entries of runs that are gone are dropped.
        """
        out: list[RunRecord] = []
        start, batch = 0, max(limit, 200)
        index = (self.index_key("tag", tag) if tag is not None
                 else self.index_key("ver", version) if version is not None else self._runs_key)
        wanted = ["task", "status", "args", "kwargs", "created", "updated", "finished",
                  "fstep", "error", "ikey", "rec", "wkind", "wstep", "wpos", "wid", "wuntil",
                  "wname", "wkey", "wafter", "wres", "parent", "tags", "ver", "retries",
                  "retrying", "replay_of", "replayed"]
        while len(out) < limit:
            ids = [text(i) for i in self.client.zrevrange(index, start, start + batch - 1)]
            if not ids:
                break
            start += batch
            gone = []
            for run_id, run in zip(ids, self._read_runs(ids, wanted), strict=True):
                if run is None:
                    gone.append(run_id)
                elif ((status is None or run.status is status)
                      and (task is None or run.task == task)
                      and (tag is None or tag in run.tags)
                      and (version is None or run.version == version)):
                    out.append(run)
            if gone:
                self.client.zrem(index, *gone)
                start -= len(gone)
        return out[:limit]

    def history(self, run_id: str) -> list[HistoryEntry]:
        """See :meth:`RunHistory.history`: one ``LRANGE``."""
        stored = self.client.lrange(self.run_keys(run_id)[1], 0, -1)
        return readable_history(run_id, enumerate(stored))

    def set_metadata(self, run_id: str, token: int, values: Mapping[str, str]) -> bool:
        """See :meth:`RunHistory.set_metadata`: one EVALSHA."""
        pairs = [part for item in values.items() for part in item]
        return bool(self._send(self._script("SET_META", (self.run_key(run_id),
                                                         self.run_keys(run_id)[2]),
                                            token, *pairs))[0])

    def link_replay(self, original_id: str, replay_id: str) -> bool:
        """See :meth:`RunHistory.link_replay`: one EVALSHA."""
        return bool(self._send(self._script("LINK_REPLAY", self.run_key(original_id),
                                            json.dumps(replay_id)))[0])
