"""A first end-to-end check through a real worker."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.worker


def test_step_retried_twice_then_succeeds(start_worker, tag, redis_client):
    """A 4-step task whose 3rd step fails twice: steps 1, 2, 4 run once, step 3 three times."""
    from apps.core_app import four_steps

    start_worker("apps.core_app")
    result = four_steps.delay(tag, 1, 2)
    assert result.get(timeout=30) == {"a": 2, "b": 3, "c": 30, "d": 31}
    assert int(redis_client.get(f"{tag}:add_one")) == 3
    assert int(redis_client.get(f"{tag}:flaky")) == 3
