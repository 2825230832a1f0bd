"""Response encoding: compact JSON, NDJSON lines and Ollama's timestamps."""

from __future__ import annotations

import json
import time
from datetime import datetime
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


_second: list[object] = [None, ""]


def created_at() -> str:
    """Now in RFC 3339 UTC with trailing fractional zeros trimmed, like Go's time.Time.

    Called once per streamed token, so the whole-second part is formatted once a second.
    """
    now = time.time()
    whole = int(now)
    if _second[0] != whole:
        _second[0] = whole
        _second[1] = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole))
    frac = f"{int((now - whole) * 1e6):06d}".rstrip("0")
    return f"{_second[1]}.{frac}Z" if frac else f"{_second[1]}Z"


def local_time(moment: datetime) -> str:
    """A local timestamp with offset, as Ollama writes ``modified_at`` and ``expires_at``."""
    return moment.astimezone().isoformat()
