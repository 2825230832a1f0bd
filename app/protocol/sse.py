"""Server-Sent Events framing for the OpenAI-compatible stream."""

from __future__ import annotations

from typing import Any

from app.protocol.ndjson import dumps

DONE = b"data: [DONE]\n\n"


def event(obj: Any) -> bytes:
    return f"data: {dumps(obj)}\n\n".encode()
