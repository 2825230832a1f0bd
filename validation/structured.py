"""Structured output formats: checking a ``format`` at request time and the reply at the end.

:func:`prepare_format` turns Ollama's ``format`` (``"json"`` or a JSON Schema object) into an
:class:`OutputFormat`: the schema is checked with ``jsonschema`` against the draft it declares, then
compiled to an llguidance grammar, so an invalid schema, a keyword that cannot be enforced or a bad
``pattern`` is refused before anything runs. :meth:`OutputFormat.validate` checks the finished reply
against the schema; the grammar makes a valid reply the rule, this makes it a guarantee.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass, field
from typing import Any

import jsonschema
from jsonschema.exceptions import SchemaError
from llguidance import LLMatcher

from validation.request_checks import FieldError

JSON_OBJECT: dict[str, Any] = {"type": "object"}

# Compact separators and no free whitespace between tokens: small models cannot pad forever.
_COMPILE_OPTIONS: dict[str, Any] = {
    "whitespace_flexible": False,
    "item_separator": ",",
    "key_separator": ":",
}


# Exactly the calendar dates Python's ``date.fromisoformat`` (jsonschema's ``date`` check) accepts:
# llguidance's own ``date`` format also allows year 0000 and days such as 02-31.
_YEAR = r"(000[1-9]|00[1-9][0-9]|0[1-9][0-9]{2}|[1-9][0-9]{3})"
_LEAP_YEAR = r"([0-9]{2}(0[48]|[2468][048]|[13579][26])|(0[48]|[2468][048]|[13579][26])00)"
DATE_PATTERN = (
    rf"^({_YEAR}-((0[13578]|1[02])-(0[1-9]|[12][0-9]|3[01])|(0[469]|11)-(0[1-9]|[12][0-9]|30)"
    rf"|02-(0[1-9]|1[0-9]|2[0-8]))|{_LEAP_YEAR}-02-29)$"
)


def grammar_schema(schema: Any) -> Any:
    """``schema`` as the grammar compiler should see it: ``"format": "date"`` (without a pattern of
    its own) becomes :data:`DATE_PATTERN`, so what the grammar allows is what validation accepts."""
    if isinstance(schema, list):
        return [grammar_schema(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out = {key: grammar_schema(value) for key, value in schema.items()}
    if out.get("format") == "date" and "pattern" not in out:
        del out["format"]
        out["pattern"] = DATE_PATTERN
    return out


class OutputMismatch(ValueError):
    """A finished reply is not valid JSON for the schema; the message names the path and reason."""


@dataclass(frozen=True)
class OutputFormat:
    """A checked schema and the llguidance grammar that enforces it while decoding."""

    schema: dict[str, Any]
    grammar: str
    _validator: Any = field(compare=False, repr=False, default=None)

    def validate(self, text: str) -> None:
        """Raise :class:`OutputMismatch` unless ``text`` is JSON that satisfies the schema."""
        try:
            value = json.loads(text)
        except json.JSONDecodeError as error:
            where = open_path(text[: error.pos])
            raise OutputMismatch(f"at {where}: the reply is not complete JSON ({error})") from error
        worst = jsonschema.exceptions.best_match(self._validator.iter_errors(value))
        if worst is not None:
            raise OutputMismatch(f"at {worst.json_path}: {worst.message}")


def open_path(prefix: str) -> str:
    """The JSON path of the value being written where ``prefix`` (a JSON text's start) ends."""
    stack: list[str | int] = []
    expecting_key: list[bool] = []
    key = ""
    i = 0
    while i < len(prefix):
        char = prefix[i]
        if char == '"':
            end = i + 1
            while end < len(prefix) and prefix[end] != '"':
                end += 2 if prefix[end] == "\\" else 1
            if expecting_key and expecting_key[-1]:
                key = prefix[i + 1 : end]
            i = end
        elif char == "{":
            stack.append("")
            expecting_key.append(True)
        elif char == "[":
            stack.append(0)
            expecting_key.append(False)
        elif char in "}]" and stack:
            stack.pop()
            expecting_key.pop()
        elif char == ":" and stack:
            stack[-1] = key
            expecting_key[-1] = False
        elif char == "," and stack:
            if isinstance(stack[-1], int):
                stack[-1] += 1
            else:
                expecting_key[-1] = True
        i += 1
    path = "$"
    for part in stack:
        if isinstance(part, int):
            path += f"[{part}]"
        elif part:
            path += f".{part if len(part) <= 40 else part[:40] + '…'}"
    return path


def compile_schema(schema: dict[str, Any]) -> OutputFormat:
    """Check ``schema`` and compile it; raises :class:`FieldError` naming what is wrong."""
    validator_class = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    try:
        validator_class.check_schema(schema)
    except SchemaError as error:
        where = error.json_path if error.path else "the schema"
        raise FieldError(f"invalid JSON Schema in format at {where}: {error.message}") from error
    try:
        grammar = LLMatcher.grammar_from_json_schema(grammar_schema(schema), overrides=_COMPILE_OPTIONS)  # type: ignore[arg-type]
    except ValueError as error:
        raise FieldError(f"invalid JSON Schema in format: {error}") from error
    problem = LLMatcher.validate_grammar(grammar)
    if problem:
        raise FieldError(f"format cannot be enforced: {problem.strip()}")
    validator = validator_class(schema, format_checker=validator_class.FORMAT_CHECKER)
    return OutputFormat(schema=schema, grammar=grammar, _validator=validator)


def prepare_format(value: str | dict[str, Any]) -> OutputFormat:
    """The :class:`OutputFormat` for a ``format`` already shape-checked by ``check_format``.

    Checked formats are remembered (by their canonical JSON), so a repeated schema is not
    checked and compiled again.
    """
    schema = value if isinstance(value, dict) else JSON_OBJECT
    return _prepare_cached(json.dumps(schema, sort_keys=True))


@functools.lru_cache(maxsize=256)
def _prepare_cached(canonical: str) -> OutputFormat:
    return compile_schema(json.loads(canonical))
