"""RedisStore's checkpoint meta: the direct formatting equals the JSON encoder's output."""

from __future__ import annotations

import json

import pytest

from celery_durable.records import ErrorInfo, StepRecord, StepStatus
from celery_durable.stores.redis._codec import meta_text

RECORDS = [
    StepRecord(0, "charge#0", "charge", StepStatus.SUCCEEDED, 1, value="1",
               started_at=1763780000.1234567, finished_at=1763780000.9),
    StepRecord(3, 'weird "name" é\\#2', 'weird "name" é\\', StepStatus.SUCCEEDED, 7),
    StepRecord(1, "s#0", "s", StepStatus.RETRYING, 2, started_at=1, finished_at=2.5),
    StepRecord(2, "tab\t#0", "tab\t\u2028", StepStatus.SUCCEEDED, 1, started_at=0.0,
               finished_at=1e-7),
    StepRecord(4, "f#0", "f", StepStatus.FAILED, 3,
               error=ErrorInfo("ValueError", "boom", "tb", ["a line"])),
]


@pytest.mark.parametrize("record", RECORDS, ids=lambda r: r.key)
def test_meta_text_is_the_compact_json_of_to_meta(record: StepRecord) -> None:
    expected = json.dumps(record.to_meta(), separators=(",", ":"))
    assert meta_text(record) == expected
    assert StepRecord.from_meta(record.position, json.loads(meta_text(record)),
                                record.value) == record
