"""The form behind "replay with edited arguments" (a new run)."""

from __future__ import annotations

import json
from typing import Any

from django import forms

from celery_durable.serialization import decode, get_serializer

#: Longest text accepted in a field: the default durable_max_checkpoint_bytes (the engine
#: still enforces the app's own limit when the run is re-triggered).
MAX_INPUT = 1024 * 1024

def _parse(text: str, kind: type, example: str, label: str) -> Any:
    """JSON ``text`` decoded as ``kind`` (list or dict), or a ValidationError saying why not."""
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise forms.ValidationError(
            f"{label} must be valid JSON: {exc.msg} at line {exc.lineno}, "  # type: ignore[attr-defined]
            f"column {exc.colno}.", code="invalid_json") from None  # type: ignore[attr-defined]
    if not isinstance(value, kind):
        raise forms.ValidationError(
            f"{label} must be a JSON {'list' if kind is list else 'object'}, e.g. {example}; "
            f"got {type(value).__name__}.", code="wrong_type")
    try:  # tagged rich values ({"__cd__": [...]}) become what the task will receive
        return decode(get_serializer("json"), text, what=label.lower())
    except Exception as exc:
        raise forms.ValidationError(f"{label} cannot be decoded: {exc}",
                                    code="undecodable") from None


class ReplayForm(forms.Form):
    """Edit a run's positional and keyword arguments (JSON) and replay it as a new run.

    ``from_step`` is ``start``, ``failed`` (keep every completed step) or the key
    of a completed step (keep the steps before it); anything but ``start`` needs
    ``confirm``, since the kept steps' values were computed from the old arguments.
    """

    args = forms.CharField(max_length=MAX_INPUT, label="Arguments (JSON list)",
                           widget=forms.Textarea(attrs={"rows": 8, "cols": 80,
                                                        "class": "vLargeTextField cd-code"}))
    kwargs = forms.CharField(max_length=MAX_INPUT, label="Keyword arguments (JSON object)",
                             widget=forms.Textarea(attrs={"rows": 6, "cols": 80,
                                                          "class": "vLargeTextField cd-code"}))
    from_step = forms.ChoiceField(label="Replay", initial="start", widget=forms.RadioSelect)
    confirm = forms.BooleanField(
        required=False, label="Keep the kept steps' recorded values",
        help_text="Needed when steps are kept: their values were computed from the old "
                  "arguments and are not computed again.")
    idempotency_key = forms.CharField(
        required=False, max_length=255, label="Idempotency key (optional)",
        help_text="A second replay submitted with the same key starts nothing new.")

    def __init__(self, *args: Any, completed: list[str] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        done = list(completed or [])
        choices = [("start", "From the start: every step runs again with the new arguments")]
        if done:
            choices.append(("failed", f"Keep every completed step ({len(done)}): "
                                      f"{', '.join(done)}"))
            choices += [(key, f"From {key}: keep the {n} step(s) before it")
                        for n, key in enumerate(done[1:], 1)]
        self.fields["from_step"].choices = choices  # type: ignore[attr-defined]

    def clean_args(self) -> list[Any]:
        """The arguments, decoded; a clear error if they are not a JSON list."""
        return list(_parse(self.cleaned_data["args"], list, '[42, "sku-1"]', "Arguments"))

    def clean_kwargs(self) -> dict[str, Any]:
        """The keyword arguments, decoded; a clear error if they are not a JSON object."""
        return dict(_parse(self.cleaned_data["kwargs"] or "{}", dict, '{"amount": 3}',
                           "Keyword arguments"))


class PayloadForm(forms.Form):
    """A JSON payload (an event's, a wait token's); blank means ``null``."""

    payload = forms.CharField(
        label="Payload (JSON, optional)", required=False, max_length=1024 * 1024,
        widget=forms.Textarea(attrs={"rows": 6, "cols": 80, "class": "vLargeTextField cd-code"}))

    def clean_payload(self) -> Any:
        """The payload decoded from JSON (blank means ``null``), or a clear error."""
        text = self.cleaned_data["payload"].strip()
        if not text:
            return None
        try:
            return json.loads(text)
        except ValueError as exc:
            raise forms.ValidationError(
                f"The payload must be valid JSON: {exc.msg} at line {exc.lineno}, "  # type: ignore[attr-defined]
                f"column {exc.colno}.", code="invalid_json") from None  # type: ignore[attr-defined]
