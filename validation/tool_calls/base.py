"""The shared machinery: call records, results, and a marker-driven incremental parser."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Protocol

from validation.markers import json_end, split_at


class MalformedCall(ValueError):
    """The text between a call's markers is not a call."""


@dataclass(frozen=True)
class ToolCall:
    name: str
    arguments: dict[str, Any]


@dataclass
class Parsed:
    """What a parser releases: answer text, complete calls, and malformed-call errors."""

    content: str = ""
    calls: list[ToolCall] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def extend(self, other: Parsed) -> None:
        self.content += other.content
        self.calls += other.calls
        self.errors += other.errors


class ToolCallParser(Protocol):
    def feed(self, text: str) -> Parsed: ...

    def finish(self) -> Parsed: ...


def make_call(name: object, arguments: object) -> ToolCall:
    """A call from a name and arguments given as an object or a JSON string."""
    if not isinstance(name, str) or not name:
        raise MalformedCall("a tool call needs a non-empty string name")
    if arguments is None:
        arguments = {}
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments) if arguments.strip() else {}
        except json.JSONDecodeError as error:
            raise MalformedCall(f"arguments of {name!r} are not JSON: {error}") from error
    if not isinstance(arguments, dict):
        raise MalformedCall(f"arguments of {name!r} must be a JSON object")
    return ToolCall(name, arguments)


def call_from_object(obj: object) -> ToolCall:
    """``{"name", "arguments" | "parameters"}`` (the Hermes, Llama and Mistral JSON shapes)."""
    if not isinstance(obj, dict):
        raise MalformedCall("a tool call must be a JSON object")
    arguments = obj.get("arguments", obj.get("parameters"))
    return make_call(obj.get("name"), arguments)


def loads(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise MalformedCall(f"tool call is not valid JSON: {error}") from error


class State(Enum):
    TEXT = "text"  # ordinary answer text, watching for the start marker
    CALL = "call"  # inside a call, collecting its body


BodyParser = Callable[[str], list[ToolCall]]


class MarkerParser:
    """Calls framed by ``start`` and ``end`` markers; with ``end=None`` a call's body ends where
    its first JSON value is complete. Text outside calls is released as content."""

    def __init__(self, start: str, end: str | None, body: BodyParser) -> None:
        self._start, self._end, self._body = start, end, body
        self.state = State.TEXT
        self._held = ""

    def feed(self, text: str) -> Parsed:
        out = Parsed()
        buffer = self._held + text
        self._held = ""
        while buffer:
            if self.state is State.TEXT:
                before, after, found = split_at(buffer, self._start)
                out.content += before
                if not found:
                    self._held = after
                    break
                self.state, buffer = State.CALL, after
            else:
                body, rest, complete = self._take_body(buffer)
                if not complete:
                    self._held = buffer
                    break
                self._parse_into(body, out)
                self.state, buffer = State.TEXT, rest
        return out

    def _take_body(self, buffer: str) -> tuple[str, str, bool]:
        if self._end is not None:
            before, after, found = split_at(buffer, self._end)
            return before, after, found
        stripped = buffer.lstrip()
        end = json_end(stripped)
        return (stripped[:end], stripped[end:], True) if end >= 0 else ("", "", False)

    def _parse_into(self, body: str, out: Parsed) -> None:
        try:
            out.calls += self._body(body.strip())
        except MalformedCall as error:
            out.errors.append(f"{error} (in {self._start}{body.strip()[:200]})")

    def finish(self) -> Parsed:
        out = Parsed()
        held, self._held = self._held, ""
        if self.state is State.TEXT:
            out.content = held
        elif held.strip():
            self._parse_into(held, out)  # a model may end the reply instead of closing the call
        else:
            out.errors.append(f"empty tool call after {self._start}")
        self.state = State.TEXT
        return out
