"""llguidance grammars for what the engine enforces: a JSON answer, tool calls, after thinking.

All are Lark grammars with JSON Schemas embedded (``%json``). Free text and reasoning are lazy
lexemes that end at the first marker (``</think>``, ``<tool_call>``), so the constraint can be on
from the first token and still only bind the parts it is about.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from llguidance import LLMatcher

from validation.grammar_schema import grammar_copy, tool_arguments

MARKERS = ("<think>", "</think>", "<tool_call>", "</tool_call>", "[TOOL_CALLS]")

# Separators real models write in tool calls (json.dumps defaults), so a call stays on-distribution.
# ``oneOf`` is decoded as ``anyOf`` (pydantic's discriminated unions are ``oneOf``); the validator
# still checks that exactly one branch matches.
TOOL_JSON_STYLE = {
    "whitespace_flexible": False,
    "item_separator": ", ",
    "key_separator": ": ",
    "coerce_one_of": True,
}
ANSWER_JSON_STYLE = {
    "whitespace_flexible": False,
    "item_separator": ",",
    "key_separator": ":",
    "coerce_one_of": True,
}
# Keywords llguidance does not implement (``uniqueItems``, ``dependencies``, unknown formats) are
# skipped, and reported as warnings, rather than refused; the validator still checks them.
LENIENT = {"lenient": True}


def skipped_by(grammar: str) -> tuple[str, ...] | None:
    """What a grammar built with :data:`LENIENT` leaves unenforced (llguidance's warnings, e.g.
    ``Unimplemented keys: ["uniqueItems"]``); ``None`` when it does not compile or skips nothing,
    so the strict compile's problem stands."""
    failed, messages = LLMatcher.validate_grammar_with_warnings(grammar)
    if failed or not messages:
        return None
    return tuple(dict.fromkeys(m.strip() for m in messages))


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
    """The answer is JSON for ``schema`` (a grammar copy, :func:`grammar_copy`); with
    ``thinking`` a reasoning block may come first."""
    body = _embed(schema, ANSWER_JSON_STYLE)
    if not thinking:
        return f"%llguidance {{}}\nstart: {body}\n"
    prefix = _thinking_prefix(inside, tokens or {})
    return f"%llguidance {{}}\nstart: think {body}\n" + prefix + "TEXT: /(.|\\n)*/\n"


def call_schema(tools: list[dict[str, Any]], arguments_key: str = "arguments") -> dict[str, Any]:
    """One JSON object naming a declared tool, with arguments valid for that tool.

    Each tool's parameters move under the root's ``$defs`` (their own ``$defs`` and ``$ref``\\ s
    rebased there), so references resolve inside the wrapper; keys follow the declared order.
    """
    branches = []
    definitions: dict[str, Any] = {}
    for i, tool in enumerate(tools):
        function = tool["function"]
        parameters = grammar_copy(function.get("parameters") or {"type": "object"})
        reference, moved = tool_arguments(parameters, f"trillm_tool_{i}")
        definitions |= moved
        branches.append(
            {
                "type": "object",
                "properties": {"name": {"const": function["name"]}, arguments_key: reference},
                "required": ["name", arguments_key],
                "additionalProperties": False,
            }
        )
    root = {"anyOf": branches} if len(branches) > 1 else branches[0]
    return {"$defs": definitions} | root


def tool_grammar(
    fmt: str,
    tools: list[dict[str, Any]],
    *,
    thinking: bool,
    inside: bool,
    tokens: Mapping[str, int] | None = None,
    required: bool = False,
    parallel: bool = True,
    lenient: bool = False,
) -> str | None:
    """Free text with tool calls whose JSON is bound to the declared tools, for formats that
    frame calls with a marker (and Llama 3's bare JSON when a call is required); ``None`` where
    only parsing and validation apply (Qwen3-Coder's XML). ``tokens``
    maps markers the tokenizer holds as single added tokens to their ids.

    ``required``: the reply is calls only, from its first token (after a reasoning block on
    thinking models), one per line, and ends after a call; with ``parallel=False`` exactly one.
    ``lenient``: what the grammar cannot enforce of the tools' schemas is skipped (:data:`LENIENT`).
    """
    tokens = tokens or {}
    style = TOOL_JSON_STYLE | LENIENT if lenient else TOOL_JSON_STYLE
    if fmt == "hermes":
        body = _embed(call_schema(tools), style)
        frame = f"/\\n?/ {body} /\\n?/ {_literal('</tool_call>', tokens)}"
        open_call = f"open_call: {_literal('<tool_call>', tokens)} {frame}\n"
        call = f"call: call_head {frame}\n" + _marker("<tool_call>", tokens, "call_head")
    elif fmt == "mistral":
        call_object = call_schema(tools)  # its $defs go to the array's root, where $refs point
        array: dict[str, Any] = {"$defs": call_object.pop("$defs"), "type": "array"}
        array |= {"items": call_object, "minItems": 1}
        if required and not parallel:
            array["maxItems"] = 1
        body = _embed(array, style)
        open_call = f"open_call: {_literal('[TOOL_CALLS]', tokens)} {body}\n"
        call = f"call: call_head {body}\n" + _marker("[TOOL_CALLS]", tokens, "call_head")
        parallel = False  # one array holds every call
    elif fmt == "llama3" and required:  # the call is a bare JSON object that opens the reply
        open_call = f"open_call: {_embed(call_schema(tools, 'parameters'), style)}\n"
        parallel = False
    else:
        return None
    think = "think " if thinking else ""
    if required:
        calls = 'open_call ("\\n" open_call)*' if parallel else "open_call"
        rules = f"start: {think}{calls}\n" + open_call
    else:
        rules = f"start: {think}(call)* tail\ntail: TEXT\nTEXT: /(.|\\n)*/\n" + call
    if thinking:
        rules += _thinking_prefix(inside, tokens)
        if required:
            rules += "TEXT: /(.|\\n)*/\n"
    return "%llguidance {}\n" + rules
