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
from llguidance import LLMatcher

from validation.grammar_schema import grammar_copy
from validation.grammars import ANSWER_JSON_STYLE, LENIENT, skipped_by
from validation.request_checks import FieldError, schema_problem

JSON_OBJECT: dict[str, Any] = {"type": "object"}


class OutputMismatch(ValueError):
    """A finished reply is not valid JSON for the schema; the message names the path and reason."""


@dataclass(frozen=True)
class OutputFormat:
    """A checked schema and the llguidance grammar that enforces it while decoding."""

    schema: dict[str, Any]
    grammar: str
    decoded: dict[str, Any] = field(compare=False, repr=False, default_factory=dict)
    """The schema's grammar copy (:func:`grammar_copy`): what decoding enforces."""
    _validator: Any = field(compare=False, repr=False, default=None)
    approximated: tuple[str, ...] = ()
    """What decoding does not enforce (llguidance's words: ``Unimplemented keys: ["uniqueItems"]``,
    ``Unknown format: uri-reference``); the reply is still validated against all of it."""

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


def compile_schema(schema: dict[str, Any], text: str | None = None) -> OutputFormat:
    """Check ``schema`` (whose JSON is ``text``) and compile it; raises :class:`FieldError` naming
    what is wrong."""
    validator_class = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    invalid = schema_problem(text or json.dumps(schema, separators=(",", ":")))
    if invalid is not None:
        where = "the schema" if invalid.at_root else invalid.json_path
        raise FieldError(f"invalid JSON Schema in format at {where}: {invalid.message}")
    decoded = grammar_copy(schema)
    try:
        grammar = LLMatcher.grammar_from_json_schema(decoded, overrides=ANSWER_JSON_STYLE)  # type: ignore[arg-type]
    except ValueError as error:
        raise FieldError(f"invalid JSON Schema in format: {error}") from error
    problem = LLMatcher.validate_grammar(grammar)
    approximated: tuple[str, ...] = ()
    if problem:
        grammar, approximated = _approximate(decoded, problem)
    validator = validator_class(schema, format_checker=validator_class.FORMAT_CHECKER)
    return OutputFormat(
        schema=schema, grammar=grammar, decoded=decoded, _validator=validator, approximated=approximated
    )


def _approximate(decoded: dict[str, Any], problem: str) -> tuple[str, tuple[str, ...]]:
    """A grammar that enforces what it can of a schema the strict compile refused (keywords it
    does not implement, formats it does not know), and what it leaves to the validator; a
    :class:`FieldError` with the strict problem when even that cannot be built."""
    try:
        lenient = LLMatcher.grammar_from_json_schema(decoded, overrides=ANSWER_JSON_STYLE | LENIENT)  # type: ignore[arg-type]
        skipped = skipped_by(lenient)
    except ValueError:
        skipped = None
    if skipped is None:
        raise FieldError(f"format cannot be enforced: {problem.strip()}")
    return lenient, skipped


def prepare_format(value: str | dict[str, Any]) -> OutputFormat:
    """The :class:`OutputFormat` for a ``format`` already shape-checked by ``check_format``.

    Checked formats are remembered by their JSON text, so a repeated schema is not checked and
    compiled again. The text keeps the schema's key order: properties are decoded in the order
    they are declared, so two schemas that differ only in order are different formats.
    """
    schema = value if isinstance(value, dict) else JSON_OBJECT
    return _prepare_cached(json.dumps(schema, separators=(",", ":")))


@functools.lru_cache(maxsize=256)
def _prepare_cached(canonical: str) -> OutputFormat:
    return compile_schema(json.loads(canonical), canonical)
