"""``format``, ``think`` and ``tools``: checked here, before a request reaches the engine.

``format`` is compiled into an :class:`~validation.structured.OutputFormat` (400 when the schema is
invalid or cannot be enforced). Thinking and tool calls have their own issue; until they land, a
request that asks for one gets a 400 that says so instead of a reply that silently ignores it.
"""

from __future__ import annotations

from typing import Any

from app.errors import BadRequest
from validation.request_checks import FieldError, check_format, check_think, check_tools
from validation.structured import OutputFormat, prepare_format


def read_steering(body: dict[str, Any], model: str) -> OutputFormat | None:
    """The output format to enforce, if any; 400 for bad or not yet supported fields."""
    try:
        fmt = check_format(body.get("format"))
        think = check_think(body.get("think"))
        tools = check_tools(body.get("tools"))
        output_format = None if fmt is None else prepare_format(fmt)
    except FieldError as error:
        raise BadRequest(str(error)) from error
    short = model.removesuffix(":latest")
    if think is not None and think is not False:
        raise BadRequest(f'"{short}" does not support thinking')
    if tools:
        raise BadRequest(f'"{short}" does not support tools')
    return output_format
