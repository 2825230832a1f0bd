"""Server-Sent Events framing for the OpenAI- and Anthropic-compatible streams."""

from __future__ import annotations

from typing import Any

from app.protocol.ndjson import dumps

DONE = b"data: [DONE]\n\n"


def event(obj: Any, name: str | None = None) -> bytes:
    """One event; ``name`` is its ``event:`` line (the Responses and Messages streams name theirs)."""
    head = f"event: {name}\n" if name else ""
    return f"{head}data: {dumps(obj)}\n\n".encode()
