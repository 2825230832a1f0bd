"""Response encoding: compact JSON, NDJSON lines and Ollama's timestamps."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from quart import Response

NDJSON = "application/x-ndjson"
JSON = "application/json; charset=utf-8"


def dumps(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


def line(obj: Any) -> bytes:
    """One NDJSON line: compact JSON and a newline, never a blank line."""
    return (dumps(obj) + "\n").encode()


def json_response(obj: Any, status: int = 200) -> Response:
    return Response(dumps(obj), status=status, content_type=JSON)


def created_at() -> str:
    """Now in RFC 3339 UTC with trailing fractional zeros trimmed, like Go's time.Time."""
    now = datetime.now(UTC)
    frac = f"{now.microsecond:06d}".rstrip("0")
    return now.strftime("%Y-%m-%dT%H:%M:%S") + (f".{frac}" if frac else "") + "Z"


def local_time(moment: datetime) -> str:
    """A local timestamp with offset, as Ollama writes ``modified_at`` and ``expires_at``."""
    return moment.astimezone().isoformat()
