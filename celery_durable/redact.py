"""``durable_redact``: mask the values of sensitive fields (``card_number``, ``api_key``…).

The setting is a list of field names, matched case-insensitively with ``-``
and ``_`` treated alike. Masking applies

* to stored errors and tracebacks (``name=value``, ``name: value``,
  ``"name": "value"`` become ``name=***``) before they are written, and
* to what the Django admin shows: arguments, results and step values (JSON
  objects at any depth) and error messages and tracebacks.

Checkpoints themselves are not masked: the run needs its real values to
resume. Keep secrets out of step values where you can (pass a reference).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from functools import lru_cache
from typing import Any

MASK = "***"


def _norm(name: str) -> str:
    return name.strip().lower().replace("-", "_")


def normalize(names: Iterable[str] | str | None) -> frozenset[str]:
    """The setting's names as a frozenset of normalized names (a string may list them with ,)."""
    if not names:
        return frozenset()
    if isinstance(names, str):
        names = names.split(",")
    return frozenset(_norm(n) for n in names if n.strip())


@lru_cache(maxsize=32)
def _pattern(names: frozenset[str]) -> re.Pattern[str]:
    alternatives = "|".join(
        re.escape(n).replace("_", "[-_]") for n in sorted(names, key=len, reverse=True))
    # name, optional closing quote, separator (= or :), then a quoted or bare value.
    return re.compile(
        rf"""(?i)(?<![\w-])((?:{alternatives})["']?\s*[:=]\s*)"""
        r"""("(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|[^\s,;)}\]&]+)""")


def redact_text(text: str, names: frozenset[str]) -> str:
    """``text`` with the value after each ``name=`` / ``name:`` / ``"name":`` masked."""
    if not names or not text:
        return text
    return _pattern(names).sub(lambda m: m.group(1) + MASK, text)


def redact_value(value: Any, names: frozenset[str]) -> Any:
    """A copy of ``value`` (JSON-like) with every dict entry named in ``names`` masked."""
    if not names:
        return value
    if isinstance(value, dict):
        return {k: (MASK if isinstance(k, str) and _norm(k) in names
                    else redact_value(v, names)) for k, v in value.items()}
    if isinstance(value, list):
        return [redact_value(v, names) for v in value]
    return value


def redact_json_text(text: str | None, names: frozenset[str]) -> str | None:
    """Stored JSON text with sensitive entries masked; text that is not JSON via redact_text."""
    if not names or text is None:
        return text
    try:
        value = json.loads(text)
    except ValueError:
        return redact_text(text, names)
    return json.dumps(redact_value(value, names), separators=(",", ":"))


def unredact(edited: Any, original: Any, names: frozenset[str]) -> Any:
    """``edited`` with every masked entry (still ``***``) given back its ``original`` value.

    Used by the admin's "retry with edited arguments" form, which shows masked
    arguments: a field left masked keeps its real value.
    """
    if not names:
        return edited
    if isinstance(edited, dict):
        orig = original if isinstance(original, dict) else {}
        out = {}
        for k, v in edited.items():
            if isinstance(k, str) and _norm(k) in names and v == MASK and k in orig:
                out[k] = orig[k]
            else:
                out[k] = unredact(v, orig.get(k), names)
        return out
    if isinstance(edited, list):
        orig_list = original if isinstance(original, list) else []
        return [unredact(v, orig_list[i] if i < len(orig_list) else None, names)
                for i, v in enumerate(edited)]
    return edited
