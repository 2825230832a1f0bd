"""OpenAI's Responses API (``POST /v1/responses``): its request shape, and its translation into
the native chat request the engine runs.

The server is stateless, as Ollama's is: ``input`` carries the whole conversation (messages with
``input_text`` parts, the ``function_call`` items the model made and the ``function_call_output``
items that answer them, ``reasoning`` items sent back), ``instructions`` the system prompt.
``previous_response_id``, ``conversation`` and ``store: true`` ask the server to remember, and get
a 400 that says so. Function tools, ``tool_choice``, ``text.format`` and ``reasoning.effort`` map to
what ``/v1/chat/completions`` does with its own fields.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from app.protocol.openai_request import (
    EFFORT,
    OPENAI_ROLES,
    as_chat_request,
    bad,
    image_payload,
    native_options,
    tool_message,
)
from app.protocol.requests import Body, ChatRequest, JsonSchemaFormat, ModelField, Reasoning

STATELESS = (
    "this server is stateless: it keeps no responses or conversations, so send the whole "
    "conversation in input (earlier messages, function_call and function_call_output items)"
)


class InputPart(BaseModel):
    """An ``input_text`` part, or an ``input_image`` part for a vision model."""

    model_config = ConfigDict(strict=True, extra="allow")
    type: str = Field(examples=["input_text", "input_image"])
    text: str | None = None
    image_url: str | None = Field(
        None, description="input_image: a base64 data URL (data:image/png;base64,...)"
    )


class InputItem(BaseModel):
    """A message (``role`` and ``content``), a ``function_call``, a ``function_call_output`` or
    a ``reasoning`` item; other item types are refused by the translation, by name."""

    model_config = ConfigDict(strict=True, extra="allow")
    type: str | None = Field(None, examples=["message"])
    role: Literal["user", "system", "developer", "assistant"] | None = None
    content: str | list[InputPart] | None = None
    call_id: str | None = None
    name: str | None = None
    arguments: str | None = None
    output: str | list[InputPart] | None = None
    summary: list[InputPart] | None = None


class FunctionTool(BaseModel):
    model_config = ConfigDict(strict=True, extra="allow")
    type: str = Field(examples=["function"])
    name: str | None = None
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class NamedFunction(BaseModel):
    model_config = ConfigDict(strict=True, extra="allow")
    type: Literal["function"]
    name: str


class TextFormat(JsonSchemaFormat):
    type: Literal["text", "json_object", "json_schema"]


class TextConfig(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")
    format: TextFormat | None = None
    verbosity: str | None = None


class ResponsesRequest(Body):
    """``POST /v1/responses``."""

    model_config = ConfigDict(json_schema_extra={"required": ["model", "input"]})
    model: str | None = ModelField
    input: str | list[InputItem] | None = Field(None, examples=["Why is the sky blue?"])
    instructions: str | None = Field(None, description="the system prompt", examples=["Answer briefly."])
    stream: bool | None = Field(
        None, description="Server-Sent Events, or one object (default)", examples=[False]
    )
    max_output_tokens: int | None = Field(None, examples=[64])
    temperature: float | None = Field(None, description="default 1", examples=[0.7])
    top_p: float | None = Field(None, description="default 1", examples=[1.0])
    seed: int | None = Field(None, description="trillm extension, as on /v1/chat/completions", examples=[1])
    tools: list[FunctionTool] | None = None
    tool_choice: Literal["auto", "none", "required"] | NamedFunction | None = Field(None, examples=["auto"])
    parallel_tool_calls: bool | None = None
    text: TextConfig | None = None
    reasoning: Reasoning | None = None
    previous_response_id: str | None = Field(None, description="refused: the server is stateless")
    conversation: str | dict[str, Any] | None = Field(None, description="refused: the server is stateless")
    store: bool | None = Field(None, description="only false: the server keeps nothing")
    metadata: dict[str, Any] | None = Field(None, description="echoed back")
    user: str | None = Field(None, description="accepted, not used")


def _parts(content: object, where: str) -> tuple[str, list[str]]:
    """The text of a content string or of its parts, and its ``input_image`` images (base64)."""
    if content is None or isinstance(content, str):
        return content or "", []
    texts: list[str] = []
    images: list[str] = []
    for i, part in enumerate(content if isinstance(content, list) else []):
        kind = part.get("type")
        if kind in ("input_text", "output_text", "text", "summary_text", "reasoning_text"):
            texts.append(part.get("text") or "")
        elif kind == "refusal":
            texts.append(part.get("refusal") or "")
        elif kind == "input_image":
            if part.get("file_id"):
                raise bad(f"{where}[{i}]: file_id images cannot be resolved: {STATELESS}", where)
            images.append(image_payload(part.get("image_url"), f"{where}[{i}].image_url"))
        elif kind == "input_file":
            raise bad(f"{where}[{i}]: input_file parts are not supported (text and images only)", where)
        else:
            raise bad(f"{where}[{i}].type {kind!r} is not supported (use input_text or input_image)", where)
    return "".join(texts), images


def _parts_text(content: object, where: str) -> str:
    """The text of content that cannot hold images (tool output, reasoning)."""
    text, images = _parts(content, where)
    if images:
        raise bad(f"{where}: images are only accepted in messages", where)
    return text


def native_messages(body: dict[str, Any]) -> list[dict[str, Any]]:
    """``instructions`` and ``input`` as native chat messages. Consecutive function calls (and the
    assistant text before them) are one assistant turn, as the model wrote them; a reasoning item
    goes with the assistant turn that follows it."""
    out: list[dict[str, Any]] = []
    if body.get("instructions"):
        out.append({"role": "system", "content": body["instructions"]})
    items = body.get("input")
    if isinstance(items, str):
        return [*out, {"role": "user", "content": items}]
    if not items:
        raise bad("input must be a non-empty string or array of items", "input")
    names: dict[str, str] = {}
    thinking = ""
    for i, item in enumerate(items):
        where = f"input[{i}]"
        kind = item.get("type") or "message"
        last = out[-1] if out else None
        if kind == "message":
            role = item.get("role")
            if role is None:
                raise bad(f"{where}.role is required for a message", where)
            text, images = _parts(item.get("content"), f"{where}.content")
            message: dict[str, Any] = {"role": OPENAI_ROLES[role], "content": text}
            if images:
                message["images"] = images
            if role == "assistant" and thinking:
                message["thinking"], thinking = thinking, ""
            out.append(message)
        elif kind == "function_call":
            call = _function_call(item, where)
            names[str(item.get("call_id"))] = call["function"]["name"]
            if last is not None and last["role"] == "assistant" and not thinking:
                last.setdefault("tool_calls", []).append(call)
            else:
                turn: dict[str, Any] = {"role": "assistant", "content": "", "tool_calls": [call]}
                if thinking:
                    turn["thinking"], thinking = thinking, ""
                out.append(turn)
        elif kind == "function_call_output":
            call_id = item.get("call_id")
            if not call_id:
                raise bad(f"{where}.call_id is required for a function_call_output", where)
            out.append(tool_message(_parts_text(item.get("output"), f"{where}.output"), call_id, names))
        elif kind == "reasoning":
            thinking += _parts_text(item.get("content") or item.get("summary"), f"{where}.content")
        elif kind == "item_reference":
            raise bad(f"{where}: item_reference cannot be resolved: {STATELESS}", where)
        else:
            raise bad(
                f"{where}.type {kind!r} is not supported (message, function_call, "
                "function_call_output, reasoning)",
                where,
            )
    return out


def _function_call(item: dict[str, Any], where: str) -> dict[str, Any]:
    name = item.get("name")
    if not name:
        raise bad(f"{where}.name is required for a function_call", where)
    try:
        arguments = json.loads(item.get("arguments") or "{}")
    except json.JSONDecodeError as error:
        raise bad(f"{where}.arguments is not JSON ({error})", where) from error
    return {"id": item.get("call_id"), "function": {"name": name, "arguments": arguments}}


def native_tools(body: dict[str, Any]) -> list[dict[str, Any]] | None:
    tools = body.get("tools")
    if not tools:
        return None
    out = []
    for i, tool in enumerate(tools):
        if tool.get("type") != "function":
            raise bad(f"tools[{i}].type {tool.get('type')!r} is not supported: only function tools", "tools")
        if not tool.get("name"):
            raise bad(f"tools[{i}].name is required", "tools")
        function = {k: tool[k] for k in ("name", "description", "parameters") if tool.get(k) is not None}
        out.append({"type": "function", "function": function})
    return out


def native_tool_choice(body: dict[str, Any]) -> object:
    choice = body.get("tool_choice")
    if isinstance(choice, dict):
        return {"type": "function", "function": {"name": choice["name"]}}
    return choice


def native_format(body: dict[str, Any]) -> object:
    spec = (body.get("text") or {}).get("format")
    if not spec or spec["type"] == "text":
        return None
    if spec["type"] == "json_object":
        return "json"
    schema = spec.get("schema")
    if not isinstance(schema, dict):
        raise bad("text.format.schema must be a JSON Schema object", "text.format")
    return schema


def native_think(body: dict[str, Any]) -> object:
    effort = (body.get("reasoning") or {}).get("effort")
    if effort is None:
        return None
    if effort not in EFFORT:
        raise bad(f"invalid reasoning.effort: {effort!r} (use {', '.join(EFFORT)})", "reasoning.effort")
    return EFFORT[effort]


def native_chat(body: dict[str, Any]) -> ChatRequest:
    """A checked ``/v1/responses`` body as the native ``/api/chat`` request it asks for; never
    truncated (an over-long prompt is a 400, as on the other OpenAI routes)."""
    for key in ("previous_response_id", "conversation"):
        if body.get(key):
            raise bad(f"{key} is not supported: {STATELESS}", key)
    if body.get("store"):
        raise bad(f"store: true is not supported: {STATELESS}", "store")
    limit = body.get("max_output_tokens")
    if limit is not None and limit < 1:
        raise bad("max_output_tokens must be at least 1", "max_output_tokens")
    sampling = {k: body.get(k) for k in ("temperature", "top_p", "seed")} | {"max_tokens": limit}
    native = {
        "model": body.get("model"),
        "messages": native_messages(body),
        "options": native_options({k: v for k, v in sampling.items() if v is not None}),
        "format": native_format(body),
        "think": native_think(body),
        "tools": native_tools(body),
        "tool_choice": native_tool_choice(body),
        "parallel_tool_calls": body.get("parallel_tool_calls"),
        "truncate": False,
    }
    return as_chat_request(native, "input")
