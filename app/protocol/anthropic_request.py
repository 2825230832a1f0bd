"""Anthropic's Messages API (``POST /v1/messages``): its request shape, and its translation into
the native chat request the engine runs.

``system`` (a string or text blocks) is the system message; ``messages`` hold ``text`` blocks,
the assistant's ``tool_use`` and ``thinking`` blocks, and the user's ``tool_result`` blocks (each
becomes a native ``tool`` message, before that turn's text). Custom tools (``input_schema``),
``tool_choice`` (``auto``, ``any``, ``tool``, ``none``, ``disable_parallel_tool_use``),
``thinking`` (or ``output_config.effort``), ``output_config.format`` (a JSON Schema: structured
output), ``stop_sequences`` and the sampling fields map onto the native ones. ``max_tokens``
is required, as Anthropic requires it. Images and server tools are refused by name.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from app.protocol.errors import BadRequest
from app.protocol.openai_request import as_chat_request, bad, image_payload, tool_message
from app.protocol.requests import Body, ChatRequest, ModelField


class Block(BaseModel):
    """A content block: ``text``, ``image`` (``source`` base64), ``tool_use``, ``tool_result``,
    ``thinking`` (others are refused by the translation, by name)."""

    model_config = ConfigDict(strict=True, extra="allow")
    type: str = Field(examples=["text"])
    text: str | None = None
    id: str | None = None
    name: str | None = None
    input: dict[str, Any] | None = None
    tool_use_id: str | None = None
    content: str | list[Block] | None = None
    is_error: bool | None = None
    thinking: str | None = None
    source: dict[str, Any] | None = Field(
        None, description='image: {"type": "base64", "media_type": "image/png", "data": ...}'
    )


class AnthropicMessage(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")
    role: Literal["user", "assistant"]
    content: str | list[Block] = Field(examples=["Hello"])


class AnthropicTool(BaseModel):
    model_config = ConfigDict(strict=True, extra="allow")
    name: str = Field(examples=["get_weather"])
    type: str | None = Field(None, description="custom (or none); server tools are refused")
    description: str | None = None
    input_schema: dict[str, Any] | None = None


class AnthropicToolChoice(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")
    type: Literal["auto", "any", "tool", "none"]
    name: str | None = None
    disable_parallel_tool_use: bool | None = None


class ThinkingConfig(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")
    type: Literal["enabled", "disabled", "adaptive", "between_tools"]
    budget_tokens: int | None = Field(None, description="accepted; the model decides how long it thinks")


class OutputFormat(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore", populate_by_name=True)
    type: Literal["json_schema"]
    schema_: dict[str, Any] = Field(alias="schema")


class OutputConfig(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")
    effort: Literal["low", "medium", "high", "xhigh", "max"] | None = None
    format: OutputFormat | None = Field(None, description="a JSON Schema, enforced and validated")


class CountTokensRequest(Body):
    """``POST /v1/messages/count_tokens``."""

    model_config = ConfigDict(json_schema_extra={"required": ["model", "messages"]})
    model: str | None = ModelField
    messages: list[AnthropicMessage] | None = None
    system: str | list[Block] | None = Field(None, examples=["Answer briefly."])
    tools: list[AnthropicTool] | None = None
    tool_choice: AnthropicToolChoice | None = None
    thinking: ThinkingConfig | None = None
    output_config: OutputConfig | None = None


class MessagesRequest(CountTokensRequest):
    """``POST /v1/messages``."""

    model_config = ConfigDict(json_schema_extra={"required": ["model", "messages", "max_tokens"]})
    max_tokens: int | None = Field(None, examples=[256])
    stream: bool | None = Field(
        None, description="Server-Sent Events, or one object (default)", examples=[False]
    )
    stop_sequences: list[str] | None = None
    temperature: float | None = Field(None, description="default 1", examples=[0.7])
    top_p: float | None = Field(None, examples=[1.0])
    top_k: int | None = Field(None, examples=[40])
    seed: int | None = Field(None, description="trillm extension, as on /v1/chat/completions", examples=[1])
    metadata: dict[str, Any] | None = Field(None, description="accepted, not used")


def _text(content: object, where: str) -> str:
    """A string, or text blocks joined (``tool_result`` content; ``system``)."""
    if content is None or isinstance(content, str):
        return content or ""
    texts = []
    for i, block in enumerate(content if isinstance(content, list) else []):
        if block.get("type") != "text":
            raise bad(f"{where}[{i}]: {block.get('type')!r} blocks are not supported here (use text)", where)
        texts.append(block.get("text") or "")
    return "".join(texts)


def _refused(kind: object, where: str) -> BadRequest:
    if kind == "document":
        return bad(f"{where}: document blocks are not supported (text and images only)", where)
    return bad(
        f"{where}: {kind!r} blocks are not supported (text, image, tool_use, tool_result, thinking)", where
    )


def _image(block: dict[str, Any], where: str) -> str:
    """The base64 of an ``image`` block (``source.type`` base64, or a base64 data URL)."""
    source = block.get("source")
    kind = source.get("type") if isinstance(source, dict) else None
    if kind == "base64" and isinstance(source, dict):
        return str(source.get("data") or "")
    if kind == "url" and isinstance(source, dict):
        return image_payload(source.get("url"), f"{where}.source.url")
    raise bad(f"{where}.source: only base64 image sources are accepted (the server fetches nothing)", where)


def native_messages(body: dict[str, Any]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    system = _text(body.get("system"), "system")
    if system:
        out.append({"role": "system", "content": system})
    messages = body.get("messages")
    if not messages:
        raise bad("messages: at least one message is required", "messages")
    names: dict[str, str] = {}  # tool_use id -> tool name, for the results that answer them
    for i, message in enumerate(messages):
        where = f"messages[{i}].content"
        role, content = message["role"], message["content"]
        if isinstance(content, str):
            out.append({"role": role, "content": content})
            continue
        texts: list[str] = []
        thinking: list[str] = []
        calls: list[dict[str, Any]] = []
        results: list[dict[str, Any]] = []
        images: list[str] = []
        for j, block in enumerate(content):
            kind = block["type"]
            here = f"{where}[{j}]"
            if kind == "text":
                texts.append(block.get("text") or "")
            elif kind == "image" and role == "user":
                images.append(_image(block, here))
            elif kind == "thinking" and role == "assistant":
                thinking.append(block.get("thinking") or "")
            elif kind == "redacted_thinking" and role == "assistant":
                continue  # encrypted by another server: nothing this model can read
            elif kind == "tool_use" and role == "assistant":
                if not block.get("id") or not block.get("name"):
                    raise bad(f"{here}: a tool_use block needs an id and a name", where)
                names[block["id"]] = block["name"]
                arguments = block.get("input") or {}
                calls.append({"id": block["id"], "function": {"name": block["name"], "arguments": arguments}})
            elif kind == "tool_result" and role == "user":
                call_id = block.get("tool_use_id")
                if not call_id:
                    raise bad(f"{here}: a tool_result block needs tool_use_id", where)
                results.append(tool_message(_text(block.get("content"), f"{here}.content"), call_id, names))
            else:
                raise _refused(kind, here)
        out.extend(results)
        if texts or calls or thinking or images or not results:
            turn: dict[str, Any] = {"role": role, "content": "".join(texts)}
            if images:
                turn["images"] = images
            if thinking:
                turn["thinking"] = "".join(thinking)
            if calls:
                turn["tool_calls"] = calls
            out.append(turn)
    return out


def native_tools(body: dict[str, Any]) -> list[dict[str, Any]] | None:
    tools = body.get("tools")
    if not tools:
        return None
    out = []
    for i, tool in enumerate(tools):
        kind = tool.get("type")
        if kind not in (None, "custom"):
            raise bad(
                f"tools[{i}]: server tool {kind!r} is not supported; declare a custom tool with an "
                "input_schema and run it in the client",
                "tools",
            )
        function = {"name": tool["name"], "parameters": tool.get("input_schema") or {"type": "object"}}
        if tool.get("description"):
            function["description"] = tool["description"]
        out.append({"type": "function", "function": function})
    return out


def native_tool_choice(body: dict[str, Any]) -> tuple[object, bool | None]:
    """The native ``tool_choice`` and ``parallel_tool_calls``."""
    choice = body.get("tool_choice")
    if not choice:
        return None, None
    parallel = False if choice.get("disable_parallel_tool_use") else None
    kind = choice["type"]
    if kind == "tool":
        if not choice.get("name"):
            raise bad('tool_choice of type "tool" needs the tool\'s name', "tool_choice")
        return {"type": "function", "function": {"name": choice["name"]}}, parallel
    return {"any": "required"}.get(kind, kind), parallel


EFFORT = {"low": "low", "medium": "medium", "high": "high", "xhigh": "high", "max": "max"}


def native_think(body: dict[str, Any], can_think: bool) -> bool | str | None:
    """``thinking`` (else ``output_config.effort``) for a model that reasons; for one that does
    not, it is dropped (as Ollama's Anthropic route does), since clients such as Claude Code send
    it to every model."""
    config = body.get("thinking")
    effort = str((body.get("output_config") or {}).get("effort") or "")
    if not can_think or not (config or effort):
        return None
    if config:
        return bool(config["type"] != "disabled")
    return EFFORT[effort]


def native_format(body: dict[str, Any]) -> dict[str, Any] | None:
    spec = (body.get("output_config") or {}).get("format")
    return spec["schema"] if spec else None


def native_chat(body: dict[str, Any], *, can_think: bool, counting: bool = False) -> ChatRequest:
    """A checked ``/v1/messages`` body as the native ``/api/chat`` request it asks for; never
    truncated. ``counting``: for ``count_tokens``, which sends no ``max_tokens`` and generates
    nothing."""
    limit = body.get("max_tokens")
    if counting:
        limit = 0
    elif limit is None:
        raise bad("max_tokens: field required", "max_tokens")
    elif limit < 1:
        raise bad("max_tokens: must be at least 1", "max_tokens")
    options = {
        "num_predict": limit,
        "temperature": 1.0 if body.get("temperature") is None else body["temperature"],
        "top_p": body.get("top_p"),
        "top_k": body.get("top_k"),
        "seed": body.get("seed"),
        "stop": body.get("stop_sequences") or None,
    }
    choice, parallel = native_tool_choice(body)
    native = {
        "model": body.get("model"),
        "messages": native_messages(body),
        "options": {k: v for k, v in options.items() if v is not None},
        "think": native_think(body, can_think),
        "format": native_format(body),
        "tools": native_tools(body),
        "tool_choice": choice,
        "parallel_tool_calls": parallel,
        "truncate": False,
    }
    return as_chat_request(native, "messages")
