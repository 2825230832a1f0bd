"""Ollama's ``keep_alive`` values: seconds as a JSON number, or a Go duration string."""

from __future__ import annotations

import re

_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")


class DurationError(ValueError):
    """The value is not a duration; the message is Ollama's."""


def parse_duration(value: object, *, bare_number_is_seconds: bool = False) -> float:
    """Seconds for ``value``; negative means forever. Raises :class:`DurationError`."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise DurationError(f"Unsupported type: '{type(value).__name__}'")
    if isinstance(value, int | float):
        return float(value)
    text = value.strip()
    if bare_number_is_seconds:
        try:
            return float(text)
        except ValueError:
            pass
    return _parse_go_duration(text)


def _parse_go_duration(text: str) -> float:
    sign = -1.0 if text.startswith("-") else 1.0
    body = text.lstrip("+-")
    if body == "0":
        return 0.0
    total, pos = 0.0, 0
    for match in _PART.finditer(body):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _UNITS[match.group(2)]
        pos = match.end()
    if not body or pos != len(body):
        if body and re.fullmatch(r"[\d.]+", body):
            raise DurationError(f'time: missing unit in duration "{text}"')
        raise DurationError(f'time: invalid duration "{text}"')
    return sign * total
