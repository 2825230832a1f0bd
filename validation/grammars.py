"""llguidance grammars for what the engine enforces: a JSON answer, tool calls, after thinking.

All are Lark grammars with JSON Schemas embedded (``%json``). Free text and reasoning are lazy
lexemes that end at the first marker (``</think>``, ``<tool_call>``), so the constraint can be on
from the first token and still only bind the parts it is about.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

MARKERS = ("<think>", "</think>", "<tool_call>", "</tool_call>", "[TOOL_CALLS]")

# Separators real models write in tool calls (json.dumps defaults), so a call stays on-distribution.
TOOL_JSON_STYLE = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}
ANSWER_JSON_STYLE = {"whitespace_flexible": False, "item_separator": ",", "key_separator": ":"}


def _embed(schema: dict[str, Any], style: dict[str, Any]) -> str:
    return "%json " + json.dumps(schema | {"x-guidance": style})


def _marker(text: str, tokens: Mapping[str, int], rule: str) -> str:
    """A rule ending free text at ``text``. A marker the tokenizer has as one added token is only
    ever sampled as that token, which Lark names by id; otherwise it is spelled out, lazily."""
    if text in tokens:
        return f"{rule}: TEXT <[{tokens[text]}]>\n"
    return f"{rule}[lazy]: TEXT {json.dumps(text)}\n"


def _literal(text: str, tokens: Mapping[str, int]) -> str:
    return f"<[{tokens[text]}]>" if text in tokens else json.dumps(text)


def _thinking_prefix(inside: bool, tokens: Mapping[str, int]) -> str:
    """Rules letting the reply reason freely first (or start inside an already open block)."""
    end = _marker("</think>", tokens, "think_text")
    if inside:
        return "think: think_text /\\n*/\n" + end
    return f"think: ({_literal('<think>', tokens)} think_text /\\n*/)?\n" + end


def answer_grammar(
    schema: dict[str, Any], *, thinking: bool, inside: bool, tokens: Mapping[str, int] | None = None
) -> str:
    """The answer is JSON for ``schema``; with ``thinking`` a reasoning block may come first."""
    body = _embed(schema, ANSWER_JSON_STYLE)
    if not thinking:
        return f"%llguidance {{}}\nstart: {body}\n"
    prefix = _thinking_prefix(inside, tokens or {})
    return f"%llguidance {{}}\nstart: think {body}\n" + prefix + "TEXT: /(.|\\n)*/\n"


def call_schema(tools: list[dict[str, Any]], arguments_key: str = "arguments") -> dict[str, Any]:
    """One JSON object naming a declared tool, with arguments valid for that tool."""
    branches = []
    for tool in tools:
        function = tool["function"]
        parameters = function.get("parameters") or {"type": "object"}
        branches.append(
            {
                "type": "object",
                "properties": {"name": {"const": function["name"]}, arguments_key: parameters},
                "required": ["name", arguments_key],
                "additionalProperties": False,
            }
        )
    return {"anyOf": branches} if len(branches) > 1 else branches[0]


def tool_grammar(
    fmt: str,
    tools: list[dict[str, Any]],
    *,
    thinking: bool,
    inside: bool,
    tokens: Mapping[str, int] | None = None,
    required: bool = False,
) -> str | None:
    """Free text with tool calls whose JSON is bound to the declared tools, for formats that
    frame calls with a marker; ``None`` where only parsing and validation apply. ``tokens``
    maps markers the tokenizer holds as single added tokens to their ids; ``required`` demands
    at least one call."""
    tokens = tokens or {}
    if fmt == "hermes":
        body = _embed(call_schema(tools), TOOL_JSON_STYLE)
        call = f"call: call_head /\\n?/ {body} /\\n?/ {_literal('</tool_call>', tokens)}\n"
        call += _marker("<tool_call>", tokens, "call_head")
    elif fmt == "mistral":
        array = {"type": "array", "items": call_schema(tools), "minItems": 1}
        call = f"call: call_head {_embed(array, TOOL_JSON_STYLE)}\n" + _marker(
            "[TOOL_CALLS]", tokens, "call_head"
        )
    else:
        return None
    calls = "(call)+" if required else "(call)*"
    head = f"start: think {calls} tail\n" if thinking else f"start: {calls} tail\n"
    rules = "tail: TEXT\nTEXT: /(.|\\n)*/\n" + call
    return "%llguidance {}\n" + head + rules + (_thinking_prefix(inside, tokens) if thinking else "")
