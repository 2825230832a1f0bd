"""``format``, ``think`` and ``tools``: checked against the request and the model's template.

What a model can do comes from its chat template: it renders ``tools`` (and in which convention its
calls come back), and it reasons in ``<think>`` blocks. A request asking for something the model
cannot do gets Ollama's 400; a schema or tool definition that cannot be enforced gets a 400 naming
the problem, before anything runs.
"""

from __future__ import annotations

import functools
import json
import logging
from typing import Any

import trio
import trio_parallel
from llguidance import LLMatcher

from app.protocol.errors import BadRequest
from inference.backends.base import ModelInfo
from inference.engine.job import Steering
from validation.grammars import skipped_by, tool_grammar
from validation.request_checks import FieldError, check_format, check_think, check_tools
from validation.structured import prepare_format
from validation.tool_calls import detect_format
from validation.toolset import ToolSet
from validation.verdicts import Entry, Verdicts, recording, remember

log = logging.getLogger("trillm.steering")


def tool_format(info: ModelInfo) -> str | None:
    return detect_format(info.chat_template)


def can_think(info: ModelInfo) -> bool:
    template = info.chat_template or ""
    return "<think>" in template or "enable_thinking" in template


def capabilities(info: ModelInfo) -> list[str]:
    if info.embedding:
        return ["embedding"]
    caps = ["completion"]
    if tool_format(info):
        caps.append("tools")
    if can_think(info):
        caps.append("thinking")
    if info.vision:
        caps.append("vision")
    return caps


async def read_steering(
    body: dict[str, Any],
    model: str,
    info: ModelInfo,
    *,
    allow_tools: bool = True,
) -> Steering:
    """The request's steering; 400 for bad values or what the model cannot do.

    Checking a schema and compiling its grammar can take tens to hundreds of milliseconds the
    first time (a 50-property schema, a request with 200 tools). Those checks are pure Python: on
    a thread of this process they would hold the interpreter lock that the decoding thread needs,
    so a format or tools not seen before are first checked in a worker process
    (``trio-parallel``), whose verdicts this process remembers (``validation/verdicts.py``). The
    rest runs on a worker thread, so that the event loop keeps every other stream flowing.
    """
    work = functools.partial(steering_of, body, model, info, allow_tools=allow_tools)
    if body.get("format") is None and not (allow_tools and body.get("tools")):
        return work()
    seen = _seen_key(body, info, allow_tools)
    if seen not in _SEEN:
        try:
            wanted = {k: body[k] for k in STEERING_FIELDS if k in body}  # not the messages
            with trio.move_on_after(CHECK_SECONDS) as capped:
                found = await trio_parallel.run_sync(
                    _verdicts_of, wanted, model, info, allow_tools, kill_on_cancel=True
                )
            if capped.cancelled_caught:  # the worker was killed; nothing of it is kept
                raise BadRequest(
                    f"format or tools take longer than {CHECK_SECONDS:g} s to check and compile; "
                    "simplify the schema (fewer definitions, less nesting) or send fewer tools"
                )
        except trio_parallel.BrokenWorkerError as error:  # then the thread below does all the work
            log.warning("checking format/tools in a worker process failed (%s); checking here", error)
        else:
            remember(found)
        _SEEN[seen] = None
        while len(_SEEN) > 1024:
            _SEEN.pop(next(iter(_SEEN)))
    return await trio.to_thread.run_sync(work)


CHECK_SECONDS = 10.0  # the most a new format or tool set may take to check and compile
STEERING_FIELDS = ("format", "think", "tools", "tool_choice", "parallel_tool_calls")
_SEEN: dict[str, None] = {}  # the formats and tools whose verdicts this process holds


def _seen_key(body: dict[str, Any], info: ModelInfo, allow_tools: bool) -> str:
    tools = body.get("tools") if allow_tools else None
    return json.dumps([body.get("format"), tools, info.chat_template], sort_keys=True, default=str)


def _verdicts_of(body: dict[str, Any], model: str, info: ModelInfo, allow_tools: bool) -> list[Entry]:
    """In a worker process: every verdict the request's steering consults."""
    return recording(lambda: steering_of(body, model, info, allow_tools=allow_tools))


def steering_of(
    body: dict[str, Any],
    model: str,
    info: ModelInfo,
    *,
    allow_tools: bool = True,
) -> Steering:
    """:func:`read_steering`'s work, synchronous.

    ``tool_choice`` (OpenAI's, also read on ``/api/chat``): ``"auto"`` (the default), ``"none"``
    (tools are not offered), ``"required"`` (the reply is calls only), or ``{"type": "function",
    "function": {"name": ...}}`` (calls of that tool only). ``parallel_tool_calls: false`` allows
    one call.
    """
    short = model.removesuffix(":latest")
    tool_choice = body.get("tool_choice") if allow_tools else None
    parallel_tool_calls = body.get("parallel_tool_calls")
    try:
        if parallel_tool_calls is None:
            parallel_tool_calls = True
        if not isinstance(parallel_tool_calls, bool):
            raise FieldError("parallel_tool_calls must be true or false")
        fmt = check_format(body.get("format"))
        think = check_think(body.get("think"))
        tools = check_tools(body.get("tools")) if allow_tools else []
        tools, required = _apply_choice(tools, tool_choice)
        output_format = None if fmt is None else prepare_format(fmt)
        toolset = ToolSet(tools) if tools else None
    except FieldError as error:
        raise BadRequest(str(error)) from error
    thinking = can_think(info)
    if think is not None and think is not False and not thinking:
        raise BadRequest(f'"{short}" does not support thinking')
    calls = tool_format(info)
    tool_approximated: tuple[str, ...] = ()
    if toolset is not None:
        if calls is None:
            raise BadRequest(f'"{short}" does not support tools')
        if output_format is not None:
            raise BadRequest("format and tools cannot be combined in one request; send one or the other")
        tool_approximated = tool_enforcement(calls, toolset)
    return Steering(
        output_format=output_format,
        tools=toolset,
        tool_format=calls,
        tool_required=required,
        tool_parallel=parallel_tool_calls,
        tool_approximated=tool_approximated,
        split_thinking=thinking,
        think=(think is not False) if thinking else None,
    )


def _check_grammar(fmt: str, tools_text: str) -> str:
    """Why the call grammar of these tools cannot be compiled ("" when it can)."""
    grammar = tool_grammar(fmt, json.loads(tools_text), thinking=False, inside=False, required=True)
    return LLMatcher.validate_grammar(grammar) if grammar else ""


def _lenient_skips(fmt: str, tools_text: str) -> str | None:
    """What the lenient call grammar of these tools leaves out, one per line; ``None`` when not
    even that grammar compiles."""
    grammar = tool_grammar(
        fmt, json.loads(tools_text), thinking=False, inside=False, required=True, lenient=True
    )
    skipped = skipped_by(grammar) if grammar else None
    return None if skipped is None else "\n".join(skipped)


_grammar_problem = Verdicts("tool grammar", _check_grammar, size=256)
_grammar_skips = Verdicts("lenient tool grammar", _lenient_skips, size=256)


def _apply_choice(tools: list[dict[str, Any]], choice: object) -> tuple[list[dict[str, Any]], bool]:
    if choice is None or choice == "auto":
        return tools, False
    if choice == "any":  # Anthropic's and LangChain's word for "required"
        choice = "required"
    if choice == "none":
        return [], False
    if choice == "required":
        if not tools:
            raise FieldError('tool_choice "required" needs at least one tool in "tools"')
        return tools, True
    if (
        isinstance(choice, dict)
        and choice.get("type") == "function"
        and isinstance(choice.get("function"), dict)
    ):
        name = choice["function"].get("name")
        chosen = [t for t in tools if t["function"]["name"] == name]
        if not chosen:
            raise FieldError(f"tool_choice names {name!r}, which is not in tools")
        return chosen, True
    raise FieldError(
        'tool_choice must be "none", "auto", "required" or {"type": "function", "function": {"name": ...}}'
    )


def tool_enforcement(fmt: str, toolset: ToolSet) -> tuple[str, ...]:
    """What the call grammar leaves to the validator (nothing when it enforces every schema
    whole); a 400 when not even a lenient grammar can be built."""
    problem = _grammar_problem(fmt, toolset.text)
    if not problem:
        return ()
    skipped = _grammar_skips(fmt, toolset.text)
    if skipped is None:
        raise BadRequest(f"tools cannot be enforced: {problem.strip()}")
    return tuple(skipped.splitlines())
