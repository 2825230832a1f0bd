"""Incremental text scanning for markers that may arrive split across tokens (``<tool`` + ``_call>``)."""

from __future__ import annotations


def partial_suffix(text: str, marker: str) -> int:
    """Length of the longest suffix of ``text`` that is a proper prefix of ``marker``."""
    for n in range(min(len(marker) - 1, len(text)), 0, -1):
        if text.endswith(marker[:n]):
            return n
    return 0


def split_at(buffer: str, marker: str) -> tuple[str, str, bool]:
    """(text before, text after, found) for ``marker`` in ``buffer``.

    When the marker is not there, "before" is everything safe to release and "after" is a tail
    that might be the marker's start (to keep until more text arrives).
    """
    index = buffer.find(marker)
    if index >= 0:
        return buffer[:index], buffer[index + len(marker) :], True
    keep = partial_suffix(buffer, marker)
    return buffer[: len(buffer) - keep], buffer[len(buffer) - keep :], False


def json_end(text: str) -> int:
    """Index just past the first complete JSON object or array at the start of ``text``, or -1."""
    depth = 0
    in_string = escaped = False
    started = False
    for i, char in enumerate(text):
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "{[":
            depth += 1
            started = True
        elif char in "}]":
            depth -= 1
            if started and depth == 0:
                return i + 1
        elif not started and not char.isspace():
            return -1
    return -1
