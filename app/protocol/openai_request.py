"""Translating OpenAI request bodies into the native request the engine runs.

Messages (string or content-part arrays, images as ``image_url`` data URLs; ``developer`` is ``system``; assistant ``tool_calls`` with
JSON-string arguments; ``tool`` messages by ``tool_call_id``), sampling fields (``max_tokens`` or
``max_completion_tokens``, ``temperature`` and ``top_p`` defaulting to 1 as OpenAI documents),
``response_format`` and ``reasoning_effort``. Anything that cannot be honoured is a 400 naming the
parameter, never silently ignored.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import ValidationError

from app.protocol.errors import BadRequest
from app.protocol.requests import ChatRequest, describe
from validation.images import ImageProblem, base64_of_url

OPENAI_ROLES = {
    "system": "system",
    "developer": "system",
    "user": "user",
    "assistant": "assistant",
    "tool": "tool",
}
EFFORT = {"none": False, "minimal": "low", "low": "low", "medium": "medium", "high": "high", "xhigh": "high"}


def bad(message: str, param: str) -> BadRequest:
    return BadRequest(message, param=param)


def _content(content: object, where: str) -> tuple[str, list[str]]:
    """The text of a message's content and its images (base64, from ``image_url`` data URLs)."""
    if content is None:
        return "", []
    if isinstance(content, str):
        return content, []
    if not isinstance(content, list):
        raise bad(f"{where}.content must be a string or an array of content parts", f"{where}.content")
    texts: list[str] = []
    images: list[str] = []
    for i, part in enumerate(content):
        here = f"{where}.content[{i}]"
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text" and isinstance(part.get("text"), str):
            texts.append(part["text"])
        elif kind == "image_url":
            image = part.get("image_url")
            url = image.get("url") if isinstance(image, dict) else image
            images.append(image_payload(url, f"{here}.image_url.url"))
        else:
            raise bad(f"{here}: only text and image_url parts are supported", f"{where}.content")
    return "".join(texts), images


def image_payload(url: object, where: str) -> str:
    """The base64 of an image sent as a data URL (``image_url``, ``input_image``); 400 otherwise."""
    try:
        return base64_of_url(url, where)
    except ImageProblem as problem:
        raise bad(str(problem), where) from problem


def _calls(raw: object, where: str) -> list[dict[str, Any]]:
    if not isinstance(raw, list):
        raise bad(f"{where}.tool_calls must be an array", f"{where}.tool_calls")
    calls = []
    for call in raw:
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise bad(f"{where}.tool_calls entries need function.name", f"{where}.tool_calls")
        arguments = function.get("arguments") or "{}"
        try:
            parsed = json.loads(arguments) if isinstance(arguments, str) else arguments
        except json.JSONDecodeError as error:
            raise bad(
                f"{where}.tool_calls: arguments are not JSON ({error})", f"{where}.tool_calls"
            ) from error
        calls.append({"id": call.get("id"), "function": {"name": function["name"], "arguments": parsed}})
    return calls


def tool_message(content: str, call_id: str, names: dict[str, str]) -> dict[str, Any]:
    """The native ``tool`` message answering the call ``call_id`` (``names``: call id -> the
    tool's name, from the conversation's earlier calls)."""
    return {"role": "tool", "content": content, "tool_call_id": call_id, "tool_name": names.get(call_id, "")}


def native_messages(body: dict[str, Any]) -> list[dict[str, object]]:
    raw = body.get("messages")
    if not isinstance(raw, list) or not raw:
        raise bad("messages must be a non-empty array", "messages")
    names: dict[str, str] = {}
    out: list[dict[str, object]] = []
    for i, message in enumerate(raw):
        where = f"messages[{i}]"
        if not isinstance(message, dict) or message.get("role") not in OPENAI_ROLES:
            raise bad(f"{where}.role must be one of {', '.join(OPENAI_ROLES)}", f"{where}.role")
        text, images = _content(message.get("content"), where)
        native: dict[str, object] = {"role": OPENAI_ROLES[message["role"]], "content": text}
        if images:
            native["images"] = images
        if message.get("tool_calls"):
            calls = _calls(message["tool_calls"], where)
            names |= {str(c["id"]): c["function"]["name"] for c in calls if c["id"]}
            native["tool_calls"] = calls
        if message.get("reasoning_content") or message.get("reasoning"):
            native["thinking"] = message.get("reasoning_content") or message.get("reasoning")
        if message["role"] == "tool":
            call_id = message.get("tool_call_id")
            native["tool_call_id"] = call_id
            native["tool_name"] = message.get("name") or names.get(str(call_id), "")
        out.append(native)
    return out


def _number(body: dict[str, Any], key: str, kind: type | tuple[type, ...]) -> Any:
    value = body.get(key)
    if value is not None and (isinstance(value, bool) or not isinstance(value, kind)):
        raise bad(f"{key} must be a number" if kind is not int else f"{key} must be an integer", key)
    return value


def native_options(body: dict[str, Any]) -> dict[str, Any]:
    """Native ``options`` for the sampling fields."""
    if body.get("n", 1) != 1:
        raise bad("only n=1 is supported", "n")
    out: dict[str, Any] = {
        "temperature": _number(body, "temperature", (int, float)),
        "top_p": _number(body, "top_p", (int, float)),
        "seed": _number(body, "seed", int),
        "presence_penalty": _number(body, "presence_penalty", (int, float)),
        "frequency_penalty": _number(body, "frequency_penalty", (int, float)),
    }
    out["temperature"] = 1.0 if out["temperature"] is None else out["temperature"]
    out["top_p"] = 1.0 if out["top_p"] is None else out["top_p"]
    limit = _number(body, "max_completion_tokens", int)
    limit = _number(body, "max_tokens", int) if limit is None else limit
    if limit is not None:
        if limit < 1:
            raise bad("max_tokens must be at least 1", "max_tokens")
        out["num_predict"] = limit
    stop = body.get("stop")
    if isinstance(stop, str):
        stop = [stop]
    if stop is not None and (not isinstance(stop, list) or not all(isinstance(s, str) for s in stop)):
        raise bad("stop must be a string or an array of strings", "stop")
    if stop:
        out["stop"] = stop
    return {k: v for k, v in out.items() if v is not None}


def response_format(body: dict[str, Any]) -> object:
    """The native ``format`` for ``response_format``."""
    spec = body.get("response_format")
    if spec is None:
        return None
    kind = spec.get("type") if isinstance(spec, dict) else None
    if kind == "text":
        return None
    if kind == "json_object":
        return "json"
    if kind == "json_schema":
        inner = spec.get("json_schema")
        schema = inner.get("schema") if isinstance(inner, dict) else None
        if not isinstance(schema, dict):
            raise bad("response_format.json_schema.schema must be a JSON Schema object", "response_format")
        return schema
    raise bad('response_format.type must be "text", "json_object" or "json_schema"', "response_format")


def native_chat(body: dict[str, Any]) -> ChatRequest:
    """A checked ``/v1/chat/completions`` body as the native ``/api/chat`` request it asks for.

    The result is a :class:`ChatRequest`, so the translation is held to the same model as a native
    body; the route runs it as ``/api/chat`` runs its own. Never truncated: OpenAI answers an
    over-long prompt with a 400."""
    native = {
        "model": body.get("model"),
        "messages": native_messages(body),
        "options": native_options(body),
        "format": response_format(body),
        "think": think(body),
        "tools": body.get("tools"),
        "tool_choice": body.get("tool_choice"),
        "parallel_tool_calls": body.get("parallel_tool_calls"),
        "logprobs": body.get("logprobs"),
        "top_logprobs": body.get("top_logprobs"),
        "truncate": False,
    }
    return as_chat_request(native, "messages")


def as_chat_request(native: dict[str, Any], param: str) -> ChatRequest:
    """A translated body (its ``None`` fields dropped) held to the native chat request model, as
    a native body is; a problem is a 400 naming the field (else ``param``). Every dialect's
    translation ends here."""
    try:
        return ChatRequest.model_validate({k: v for k, v in native.items() if v is not None})
    except ValidationError as error:
        message, field = describe(ChatRequest, error.errors()[0], "openai")
        raise bad(message, field or param) from None


def think(body: dict[str, Any]) -> object:
    effort = body.get("reasoning_effort")
    if effort is None and isinstance(body.get("reasoning"), dict):
        effort = body["reasoning"].get("effort")
    if effort is None:
        return None
    if effort not in EFFORT:
        raise bad(f"invalid reasoning value: {effort!r} (use {', '.join(EFFORT)})", "reasoning_effort")
    return EFFORT[effort]
