"""The form behind "retry with edited arguments"."""

from __future__ import annotations

import json
from typing import Any

from django import forms

from celery_durable.serialization import decode, get_serializer

#: Longest text accepted in a field: the default durable_max_checkpoint_bytes (the engine
#: still enforces the app's own limit when the run is re-triggered).
MAX_INPUT = 1024 * 1024

_FROM_CHOICES = [("failed", "From the failed step (completed steps are not re-run)"),
                 ("start", "From scratch (every checkpoint is dropped)")]


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


class RetryWithArgumentsForm(forms.Form):
    """Edit a run's positional and keyword arguments (JSON) and re-trigger it."""

    args = forms.CharField(max_length=MAX_INPUT, label="Arguments (JSON list)",
                           widget=forms.Textarea(attrs={"rows": 8, "cols": 80,
                                                        "class": "vLargeTextField cd-code"}))
    kwargs = forms.CharField(max_length=MAX_INPUT, label="Keyword arguments (JSON object)",
                             widget=forms.Textarea(attrs={"rows": 6, "cols": 80,
                                                          "class": "vLargeTextField cd-code"}))
    from_step = forms.ChoiceField(label="Resume", choices=_FROM_CHOICES, initial="failed",
                                  widget=forms.RadioSelect)

    def __init__(self, *args: Any, may_restart: bool = True, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.may_restart = may_restart

    def clean_args(self) -> list[Any]:
        """The arguments, decoded; a clear error if they are not a JSON list."""
        return list(_parse(self.cleaned_data["args"], list, '[42, "sku-1"]', "Arguments"))

    def clean_kwargs(self) -> dict[str, Any]:
        """The keyword arguments, decoded; a clear error if they are not a JSON object."""
        return dict(_parse(self.cleaned_data["kwargs"] or "{}", dict, '{"amount": 3}',
                           "Keyword arguments"))

    def clean_from_step(self) -> str:
        """``failed`` or ``start``; restarting needs the restart permission too."""
        value = str(self.cleaned_data["from_step"])
        if value == "start" and not self.may_restart:
            raise forms.ValidationError("You may not restart runs from scratch.",
                                        code="permission")
        return value
