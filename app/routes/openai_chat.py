"""``POST /v1/chat/completions``: OpenAI's protocol on the same engine.

The body is translated into the native request model (``ChatRequest``, by
``app/protocol/openai_request.py``), run exactly like ``/api/chat``, and encoded by a codec that speaks OpenAI: ``chat.completion`` objects, or SSE chunks
with the role first, deltas, a finish chunk, an optional usage chunk and ``[DONE]``. Tool calls
carry their arguments as a JSON string here; reasoning is ``reasoning_content`` (and ``reasoning``).
"""

from __future__ import annotations

import json
import secrets
import time
from typing import Any

from quart import Quart, Response

from app.protocol import fields, openai_request
from app.protocol.errors import openai_error
from app.protocol.requests import ChatCompletionRequest
from app.protocol.sse import DONE, event
from app.routes.job_responses import respond
from app.services import Services
from inference.engine.job import CallOut, Finished, Partial, TextChunk

SSE = "text/event-stream"


def finish_reason(finished: Finished, called: bool) -> str:
    if called:
        return "tool_calls"
    return "length" if finished.done_reason == "length" else "stop"


def usage(finished: Finished) -> dict[str, Any]:
    return {
        "prompt_tokens": finished.prompt_eval_count,
        "completion_tokens": finished.eval_count,
        "total_tokens": finished.prompt_eval_count + finished.eval_count,
        "prompt_tokens_details": {"cached_tokens": finished.prompt_eval_cached_count},
    }


def failed_choice(payload: dict[str, Any], partial: Partial) -> dict[str, Any]:
    """A failed reply inside OpenAI's error object: ``partial`` (the choice as far as it got,
    ``finish_reason`` null when the check cut it short) and ``usage``."""
    done = partial.finished.done_reason
    reason = finish_reason(partial.finished, False) if done else None
    return {"partial": payload | {"finish_reason": reason}, "usage": usage(partial.finished)}


def openai_calls(calls: tuple[CallOut, ...]) -> list[dict[str, Any]]:
    return [
        {
            "index": c.index,
            "id": c.id,
            "type": "function",
            "function": {"name": c.name, "arguments": json.dumps(c.arguments, ensure_ascii=False)},
        }
        for c in calls
    ]


def openai_logprobs(chunk: TextChunk) -> dict[str, Any] | None:
    if not chunk.logprobs:
        return None

    def entry(token: str, logprob: float) -> dict[str, Any]:
        return {"token": token, "logprob": logprob, "bytes": list(token.encode())}

    return {
        "content": [
            entry(s.token, s.logprob) | {"top_logprobs": [entry(t, v) for t, v in s.top]}
            for s in chunk.logprobs
        ]
    }


class ChatCodec:
    """``chat.completion`` objects and ``chat.completion.chunk`` events."""

    media_type = SSE

    def __init__(self, model: str, include_usage: bool) -> None:
        self._base = {"id": f"chatcmpl-{secrets.token_hex(12)}", "created": int(time.time()), "model": model}
        self._usage = include_usage
        self._called = False

    def _chunk(self, delta: dict[str, Any], reason: str | None = None, logprobs: Any = None) -> bytes:
        choice = {"index": 0, "delta": delta, "logprobs": logprobs, "finish_reason": reason}
        return event(self._base | {"object": "chat.completion.chunk", "choices": [choice]})

    def head(self, prompt_tokens: int) -> bytes:
        return self._chunk({"role": "assistant", "content": ""})

    def part(self, chunk: TextChunk) -> bytes:
        out = b""
        if chunk.thinking:
            out += self._chunk({"reasoning_content": chunk.thinking, "reasoning": chunk.thinking})
        if chunk.text or chunk.logprobs:
            out += self._chunk({"content": chunk.text}, logprobs=openai_logprobs(chunk))
        if chunk.tool_calls:
            self._called = True
            out += self._chunk({"tool_calls": openai_calls(chunk.tool_calls)})
        return out

    def end(self, finished: Finished) -> bytes:
        out = self._chunk({}, finish_reason(finished, self._called))
        if self._usage:
            out += event(
                self._base | {"object": "chat.completion.chunk", "choices": [], "usage": usage(finished)}
            )
        return out + DONE

    def error(self, message: str, partial: Partial | None) -> bytes:
        extra = self.failure(partial) if partial else None
        return event(openai_error(message, 500, extra=extra)) + DONE

    def failure(self, partial: Partial) -> dict[str, Any]:
        message: dict[str, Any] = {"role": "assistant", "content": partial.text}
        if partial.thinking:
            message["reasoning_content"] = message["reasoning"] = partial.thinking
        return failed_choice({"message": message}, partial)

    def whole(self, chunk: TextChunk, finished: Finished) -> dict[str, Any]:
        message: dict[str, Any] = {"role": "assistant", "content": chunk.text}
        if chunk.thinking:
            message["reasoning_content"] = message["reasoning"] = chunk.thinking
        if chunk.tool_calls:
            message["tool_calls"] = openai_calls(chunk.tool_calls)
        choice = {
            "index": 0,
            "message": message,
            "logprobs": openai_logprobs(chunk),
            "finish_reason": finish_reason(finished, bool(chunk.tool_calls)),
        }
        return self._base | {"object": "chat.completion", "choices": [choice], "usage": usage(finished)}


def stream_options(body: dict[str, Any]) -> tuple[bool, bool]:
    stream = fields.typed(body, "stream", bool, False)
    options = body.get("stream_options") or {}
    return stream, bool(isinstance(options, dict) and options.get("include_usage"))


def register(app: Quart, services: Services) -> None:
    @app.post("/v1/chat/completions")
    async def chat_completions() -> Response:
        body = await fields.read_request(ChatCompletionRequest, "openai")
        model = await services.find_model(body.get("model"))
        request = await services.translated_chat(openai_request.native_chat(body), model)
        stream, include_usage = stream_options(body)
        codec = ChatCodec(str(body["model"]), include_usage)
        return await respond(services.engine, request, stream=stream, codec=codec)
