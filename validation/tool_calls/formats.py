"""The output conventions: Hermes/Qwen, Llama 3 JSON, Mistral and Qwen3-Coder XML.

- ``hermes``: ``<tool_call>{"name": ..., "arguments": {...}}</tool_call>`` (Qwen 2.5/3, Hermes).
- ``llama3``: a bare JSON object ``{"name": ..., "parameters": {...}}`` opening the reply, optionally
  after ``<|python_tag|>``; text before it means the reply is an answer, not a call.
- ``mistral``: ``[TOOL_CALLS][{"name": ..., "arguments": {...}}, ...]`` or the newer
  ``[TOOL_CALLS]name[ARGS]{...}``.
- ``qwen3_coder``: ``<tool_call><function=NAME><parameter=KEY>VALUE</parameter></function></tool_call>``.
"""

from __future__ import annotations

import json
import re
from typing import Any

from validation.markers import json_end
from validation.tool_calls.base import (
    MalformedCall,
    MarkerParser,
    Parsed,
    ToolCall,
    call_from_object,
    loads,
    make_call,
)


def hermes_body(body: str) -> list[ToolCall]:
    return [call_from_object(loads(body))]


def mistral_body(body: str) -> list[ToolCall]:
    if body.startswith("["):
        calls = loads(body)
        if not isinstance(calls, list):
            raise MalformedCall("[TOOL_CALLS] must be followed by a JSON array")
        return [call_from_object(c) for c in calls]
    name, sep, args = body.partition("[ARGS]")
    if not sep:
        raise MalformedCall("expected [ARGS] after the tool name")
    return [make_call(name.strip(), loads(args))]


_FUNCTION = re.compile(r"<function=([^>\s]+)>(.*?)(?:</function>|$)", re.S)
_PARAMETER = re.compile(r"<parameter=([^>\s]+)>\n?(.*?)\n?(?:</parameter>|(?=<parameter=)|$)", re.S)


def _xml_value(raw: str) -> Any:
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        return raw


def qwen3_coder_body(body: str) -> list[ToolCall]:
    calls = []
    for name, inner in _FUNCTION.findall(body):
        arguments = {key: _xml_value(value) for key, value in _PARAMETER.findall(inner)}
        calls.append(make_call(name, arguments))
    if not calls:
        raise MalformedCall("expected <function=NAME> inside <tool_call>")
    return calls


def hermes() -> MarkerParser:
    return MarkerParser("<tool_call>", "</tool_call>", hermes_body)


def qwen3_coder() -> MarkerParser:
    return MarkerParser("<tool_call>", "</tool_call>", qwen3_coder_body)


def mistral() -> MarkerParser:
    return MarkerParser("[TOOL_CALLS]", None, mistral_body)


class Llama3Parser:
    """Bare JSON calls at the start of the reply; anything else makes the whole reply content."""

    TAG = "<|python_tag|>"

    def __init__(self) -> None:
        self._held = ""
        self._mode = "start"  # start | call | text

    def feed(self, text: str) -> Parsed:
        out = Parsed()
        buffer = self._held + text
        self._held = ""
        while buffer and self._mode != "text":
            stripped = buffer.lstrip()
            if stripped.startswith(self.TAG):
                stripped = stripped[len(self.TAG) :].lstrip()
            if not stripped or self.TAG.startswith(stripped):
                self._held = buffer
                return out
            if not stripped.startswith("{"):
                if self._mode == "call":  # after a call: separators, then maybe more calls
                    stripped = stripped.lstrip("; \t\n")
                    if not stripped:
                        self._held = buffer
                        return out
                    if stripped.startswith("{"):
                        buffer = stripped
                        continue
                self._mode, buffer = "text", stripped
                break
            end = json_end(stripped)
            if end < 0:
                self._held = buffer
                return out
            candidate = stripped[:end]
            try:
                obj = json.loads(candidate)
            except json.JSONDecodeError as error:
                out.errors.append(f"tool call is not valid JSON: {error} (in {candidate[:200]})")
                self._mode, buffer = "call", stripped[end:]
                continue
            if not (isinstance(obj, dict) and "name" in obj):
                self._mode, buffer = "text", stripped  # an answer that happens to be JSON
                break
            try:
                out.calls.append(call_from_object(obj))
            except MalformedCall as error:
                out.errors.append(str(error))
            self._mode, buffer = "call", stripped[end:]
        if self._mode == "text":
            out.content += buffer
        return out

    def finish(self) -> Parsed:
        held, self._held = self._held, ""
        if self._mode == "call" and not held.strip("; \t\n"):
            return Parsed()
        if held.lstrip().startswith("{") and self._mode != "text":
            return Parsed(errors=[f"unterminated tool call: {held.strip()[:200]}"])
        return Parsed(content=held if self._mode == "text" or held.strip() else "")


def llama3() -> Llama3Parser:
    return Llama3Parser()
