"""Engine security: ``durable_redact`` in stored errors, and no pickle unless configured."""

from __future__ import annotations

import re
import uuid
from pathlib import Path

import pytest
from celery import Celery

from celery_durable import PermanentError, durable_task, get_run, step
from celery_durable.redact import normalize, redact_json_text, redact_text, unredact
from celery_durable.serialization import JSONSerializer, PickleSerializer, get_serializer
from celery_durable.stores import get_store

ROOT = Path(__file__).resolve().parent.parent
CARD = "4111111111111111"
KEY = "sk_live_0123456789"


def eager_app(**conf: object) -> Celery:
    """An eager app on the in-memory store."""
    app = Celery(f"sec-{uuid.uuid4().hex[:6]}", set_as_current=False)
    app.conf.update(task_always_eager=True, durable_store="memory://", **conf)
    return app


@step(max_attempts=1)
def charge(card_number: str, api_key: str) -> None:
    raise PermanentError(f"declined: card_number={card_number} api_key='{api_key}' "
                         f"payload={{'card_number': '{card_number}', \"api_key\": \"{api_key}\"}}")


def test_redacted_fields_are_masked_in_stored_errors_and_tracebacks() -> None:
    """With durable_redact the step's and the run's stored message and traceback hold no secret."""
    app = eager_app(durable_redact=["card_number", "API-Key"])

    @durable_task(app=app, name="sec.pay")
    def pay(card_number: str, api_key: str) -> None:
        charge(card_number, api_key)

    result = pay.apply(args=(CARD, KEY))
    run = get_run(result.id, app=app)
    assert run.error is not None and run.steps[0].error is not None
    stored = [run.error.message, run.error.traceback, run.steps[0].error.message,
              run.steps[0].error.traceback]
    for text in stored:
        assert CARD not in text and KEY not in text, text
    assert "card_number=***" in run.steps[0].error.message
    assert run.args == [CARD, KEY]  # the checkpointed arguments stay usable


def test_without_the_setting_nothing_is_masked() -> None:
    """Redaction is opt-in: with no durable_redact the error is stored verbatim."""
    app = eager_app()

    @durable_task(app=app, name="sec.pay2")
    def pay(card_number: str, api_key: str) -> None:
        charge(card_number, api_key)

    run = get_run(pay.apply(args=(CARD, KEY)).id, app=app)
    assert run.error is not None and CARD in run.error.message


def test_redaction_helpers() -> None:
    """Names match case-insensitively with - and _ alike; masked form values keep the original."""
    names = normalize("card_number, api_key")
    assert redact_text("Card-Number: 4111 API_KEY=abc other=1", names) == (
        "Card-Number: *** API_KEY=*** other=1")
    assert redact_json_text('{"a": {"api_key": [1, 2]}, "card_numbers": 3}', names) == (
        '{"a":{"api_key":"***"},"card_numbers":3}')
    original = [{"card_number": CARD, "n": 1}]
    assert unredact([{"card_number": "***", "n": 2}], original, names) == [
        {"card_number": CARD, "n": 2}]
    assert unredact([{"card_number": "5555", "n": 2}], original, names) == [
        {"card_number": "5555", "n": 2}]


def test_pickle_appears_only_in_the_opt_in_serializer() -> None:
    """No module of the engine, the Django app or the examples imports pickle but serialization."""
    offenders = []
    for folder in ("celery_durable", "celery_durable_django", "example_project", "examples"):
        for path in (ROOT / folder).rglob("*.py"):
            text = path.read_text()
            if re.search(r"^\s*(import|from)\s+(c?pickle|dill|cloudpickle)\b", text, re.M):
                offenders.append(str(path.relative_to(ROOT)))
            if path.name != "serialization.py" and re.search(
                    r"""serializer\s*=\s*["']pickle""", text):
                offenders.append(f"{path.relative_to(ROOT)} (pickle serializer setting)")
    assert offenders == ["celery_durable/serialization.py"]


def test_pickle_is_used_only_when_configured() -> None:
    """Checkpoints are JSON by default; PickleSerializer only with durable_serializer='pickle'."""
    assert isinstance(get_serializer("json"), JSONSerializer)
    for conf, expected in (({}, "json"), ({"durable_serializer": "pickle"}, "pickle")):
        app = eager_app(**conf)

        @durable_task(app=app, name=f"sec.value.{expected}")
        def value() -> object:
            return step.run("v", lambda: {"n": 1})

        result = value.apply()
        stored = get_store(app).get_run(result.id)
        assert stored is not None
        text = stored.steps[0].value or ""
        if expected == "json":
            assert text == '{"n":1}'
        else:
            assert isinstance(get_serializer("pickle"), PickleSerializer)
            assert text.startswith("gA")  # base64 of a pickle protocol-5 frame
        assert get_run(result.id, app=app).result == {"n": 1}


def test_durable_tasks_do_not_change_celerys_message_serializer() -> None:
    """Task messages stay JSON (Celery's default): the engine never enables pickle content."""
    app = eager_app()

    @durable_task(app=app, name="sec.msg")
    def msg() -> None:
        return None

    assert app.tasks["sec.msg"].serializer in (None, "json")
    assert "pickle" not in (app.conf.accept_content or [])
    assert app.conf.task_serializer == "json"


@pytest.mark.parametrize("name", ["", " , "])
def test_empty_redact_setting_masks_nothing(name: str) -> None:
    """An empty setting is no redaction at all."""
    assert normalize(name) == frozenset()
    assert redact_text("card_number=1", normalize(name)) == "card_number=1"
