"""``format``, ``think`` and ``tools``: shape-checked now, refused clearly until implemented.

Structured output, thinking and tool calls each have their own issue. Until they land, a request
that asks for one gets a 400 that says so instead of a reply that silently ignores it.
"""

from __future__ import annotations

from typing import Any

from app.errors import BadRequest
from validation.request_checks import FieldError, check_format, check_think, check_tools


def reject_unsupported(body: dict[str, Any], model: str) -> None:
    try:
        fmt = check_format(body.get("format"))
        think = check_think(body.get("think"))
        tools = check_tools(body.get("tools"))
    except FieldError as error:
        raise BadRequest(str(error)) from error
    short = model.removesuffix(":latest")
    if fmt is not None:
        raise BadRequest(f'"format" (structured output) is not supported by this server yet for "{short}"')
    if think is not None and think is not False:
        raise BadRequest(f'"{short}" does not support thinking')
    if tools:
        raise BadRequest(f'"{short}" does not support tools')
