"""Run tags: what a tag may be, checked where runs and wait tokens are created."""

from __future__ import annotations

from typing import Any


def check_tags(tags: Any) -> list[str]:
    """``tags`` as a list of distinct tags; ValueError/TypeError naming a bad one.

    A tag is text of 1 to 128 characters without control characters; at most
    :data:`MAX_TAGS` per run.
    """
    if isinstance(tags, str):
        raise TypeError("tags must be a list of strings, not a string")
    out: list[str] = []
    for tag in tags or ():
        if not isinstance(tag, str):
            raise TypeError(f"a tag must be a string, not {type(tag).__name__}: {tag!r}")
        if not 0 < len(tag) <= 128 or any(ord(c) < 32 or ord(c) == 127 for c in tag):
            raise ValueError(f"a tag is 1 to 128 printable characters: {tag[:140]!r}")
        if tag not in out:
            out.append(tag)
    if len(out) > MAX_TAGS:
        raise ValueError(f"at most {MAX_TAGS} tags per run, not {len(out)}")
    return out


#: How many tags one run may carry.
MAX_TAGS = 20

__all__ = ["MAX_TAGS", "check_tags"]
