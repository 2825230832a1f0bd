"""Shape checks for the request fields that steer output: ``format``, ``think`` and ``tools``.

Pure functions with no I/O: each returns the normalised value or raises :class:`FieldError` with a
message a person can act on (Ollama's wording where Ollama has one).
"""

from __future__ import annotations

import json
from typing import Any, NamedTuple

import jsonschema
from jsonschema.exceptions import SchemaError

from validation.verdicts import Verdicts

THINK_LEVELS = ("high", "medium", "low", "max")


class FieldError(ValueError):
    """A request field has the wrong shape."""


class SchemaProblem(NamedTuple):
    """Where and why a schema is not valid JSON Schema (against the draft it declares)."""

    json_path: str
    at_root: bool
    message: str


def _check_schema(text: str) -> str | None:
    schema = json.loads(text)
    cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    try:
        cls.check_schema(schema)
    except SchemaError as error:
        return json.dumps([error.json_path, not error.path, error.message])
    return None


# The meta-schema check is pure Python and the slow part of a schema's first use (a large format,
# 200 tools); clients resend the same schemas, so its verdicts are remembered by text.
_schema_verdicts = Verdicts("json schema", _check_schema)


def schema_problem(text: str) -> SchemaProblem | None:
    """Why the JSON Schema ``text`` is invalid, or ``None`` (remembered by text)."""
    verdict = _schema_verdicts(text)
    return None if verdict is None else SchemaProblem(*json.loads(verdict))


def check_format(value: Any) -> str | dict[str, Any] | None:
    """``None`` when unset, ``"json"``, or a schema object."""
    if value is None or value == "":
        return None
    if value == "json":
        return "json"
    if isinstance(value, dict):
        return value
    raw = json.dumps(value)
    raise FieldError(f'invalid format: {raw}; expected "json" or a valid JSON Schema object')


def check_think(value: Any) -> bool | str | None:
    """``None`` when unset, a bool, or one of Ollama's levels."""
    if value is None:
        return None
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        if value in THINK_LEVELS:
            return value
        raise FieldError(
            f'invalid think value: "{value}" (must be "high", "medium", "low", "max", true, or false)'
        )
    raise FieldError('think must be a boolean or string ("high", "medium", "low", "max", true, or false)')


def check_tools(value: Any) -> list[dict[str, Any]]:
    """The ``tools`` list in ``{"type": "function", "function": {...}}`` form (empty = none)."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise FieldError("tools must be an array of tool definitions")
    for i, tool in enumerate(value):
        where = f"tools[{i}]"
        if not isinstance(tool, dict):
            raise FieldError(f"{where} must be an object")
        if tool.get("type", "function") != "function":
            raise FieldError(f'{where}.type must be "function"')
        function = tool.get("function")
        if not isinstance(function, dict):
            raise FieldError(f"{where}.function must be an object")
        name = function.get("name")
        if not isinstance(name, str) or not name:
            raise FieldError(f"{where}.function.name must be a non-empty string")
        parameters = function.get("parameters")
        if parameters is not None and not isinstance(parameters, dict):
            raise FieldError(f"{where}.function.parameters must be a JSON Schema object")
    return value
