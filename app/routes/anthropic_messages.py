"""``POST /v1/messages`` and ``/v1/messages/count_tokens``: Anthropic's Messages API on the same
engine.

The body is translated into the native chat request (``app/protocol/anthropic_request.py``) and
run as ``/api/chat`` runs; :class:`MessagesCodec` encodes the job's events as a ``message`` with
``text``, ``thinking`` and ``tool_use`` content blocks, or as Anthropic's stream: ``message_start``
and a ``ping``, then per block ``content_block_start``, its deltas (``text_delta``,
``thinking_delta``, ``input_json_delta``) and ``content_block_stop``, then ``message_delta`` with
the ``stop_reason`` and usage, and ``message_stop``; a failure is an ``error`` event. While a long
prompt is read, the stream starts after :data:`PING_AFTER` seconds and sends a ``ping`` every
:data:`PING_EVERY` seconds, so clients that give up on a silent connection keep waiting. Errors
take Anthropic's shape here (``app/protocol/errors.py``).
"""

from __future__ import annotations

import json
import secrets
from typing import Any

from quart import Quart, Response

from app.protocol import anthropic_request, fields
from app.protocol.anthropic_request import CountTokensRequest, MessagesRequest
from app.protocol.errors import ANTHROPIC_TYPES
from app.protocol.ndjson import json_response
from app.protocol.sse import event
from app.protocol.steering import can_think
from app.routes.job_responses import Keepalive, respond, run_to_end
from app.services import Services
from inference.engine.job import CallOut, Finished, GenerationRequest, Partial, TextChunk

SSE = "text/event-stream"
PING = event({"type": "ping"}, "ping")
PING_AFTER = 2.0  # seconds without a first token before the stream starts with pings
PING_EVERY = 5.0


def stop_reason(finished: Finished, called: bool) -> str:
    if called:
        return "tool_use"
    if finished.done_reason == "length":
        return "max_tokens"
    return "stop_sequence" if finished.stop_sequence else "end_turn"


def usage(finished: Finished) -> dict[str, Any]:
    cached = finished.prompt_eval_cached_count
    return {
        "input_tokens": finished.prompt_eval_count - cached,
        "cache_read_input_tokens": cached,
        "cache_creation_input_tokens": 0,
        "output_tokens": finished.eval_count,
    }


def tool_use(call: CallOut) -> dict[str, Any]:
    return {"type": "tool_use", "id": call.id, "name": call.name, "input": call.arguments}


def blocks(chunk: TextChunk) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    if chunk.thinking:
        out.append({"type": "thinking", "thinking": chunk.thinking, "signature": ""})
    if chunk.text or not (chunk.thinking or chunk.tool_calls):
        out.append({"type": "text", "text": chunk.text})
    return out + [tool_use(call) for call in chunk.tool_calls]


class MessagesCodec:
    """A ``message`` object, or Anthropic's stream of named events."""

    media_type = SSE

    def __init__(self, model: str) -> None:
        self._message: dict[str, Any] = {
            "id": f"msg_{secrets.token_hex(12)}",
            "type": "message",
            "role": "assistant",
            "model": model,
        }
        self._index = -1  # the content block being written
        self._open: str | None = None  # its type, while it is open
        self._called = False

    def head(self, prompt_tokens: int) -> bytes:
        message: dict[str, Any] = self._message | {
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": prompt_tokens, "output_tokens": 0},
        }
        return event({"type": "message_start", "message": message}, "message_start") + PING

    def _start(self, block: dict[str, Any]) -> bytes:
        out = self._stop()
        self._index += 1
        self._open = block["type"]
        start = {"type": "content_block_start", "index": self._index, "content_block": block}
        return out + event(start, "content_block_start")

    def _delta(self, delta: dict[str, Any]) -> bytes:
        return event(
            {"type": "content_block_delta", "index": self._index, "delta": delta}, "content_block_delta"
        )

    def _stop(self) -> bytes:
        if self._open is None:
            return b""
        self._open = None
        return event({"type": "content_block_stop", "index": self._index}, "content_block_stop")

    def part(self, chunk: TextChunk) -> bytes:
        out = b""
        if chunk.thinking:
            if self._open != "thinking":
                out += self._start({"type": "thinking", "thinking": "", "signature": ""})
            out += self._delta({"type": "thinking_delta", "thinking": chunk.thinking})
        if chunk.text:
            if self._open != "text":
                out += self._start({"type": "text", "text": ""})
            out += self._delta({"type": "text_delta", "text": chunk.text})
        for call in chunk.tool_calls:
            self._called = True
            out += self._start(tool_use(call) | {"input": {}})
            arguments = json.dumps(call.arguments, ensure_ascii=False)
            out += self._delta({"type": "input_json_delta", "partial_json": arguments}) + self._stop()
        return out

    def end(self, finished: Finished) -> bytes:
        reason = stop_reason(finished, self._called)
        delta = {
            "stop_reason": reason,
            "stop_sequence": finished.stop_sequence if reason == "stop_sequence" else None,
        }
        out = self._stop() + event(
            {"type": "message_delta", "delta": delta, "usage": usage(finished)}, "message_delta"
        )
        return out + event({"type": "message_stop"}, "message_stop")

    def error(self, message: str, partial: Partial | None) -> bytes:
        kind = ANTHROPIC_TYPES[422] if partial is not None else "api_error"
        return self._stop() + event({"type": "error", "error": {"type": kind, "message": message}}, "error")

    def failure(self, partial: Partial) -> dict[str, Any]:
        return {
            "partial": {"content": blocks(TextChunk(partial.text, partial.thinking))},
            "usage": usage(partial.finished),
        }

    def whole(self, chunk: TextChunk, finished: Finished) -> dict[str, Any]:
        reason = stop_reason(finished, bool(chunk.tool_calls))
        return self._message | {
            "content": blocks(chunk),
            "stop_reason": reason,
            "stop_sequence": finished.stop_sequence if reason == "stop_sequence" else None,
            "usage": usage(finished),
        }


def register(app: Quart, services: Services) -> None:
    async def native_request(body: dict[str, Any], *, counting: bool = False) -> GenerationRequest:
        model = await services.find_model(body.get("model"))
        chat = anthropic_request.native_chat(body, can_think=can_think(model.info), counting=counting)
        return await services.translated_chat(chat, model)

    @app.post("/v1/messages")
    async def messages() -> Response:
        body = await fields.read_request(MessagesRequest, "openai")
        request = await native_request(body)
        codec = MessagesCodec(str(body["model"]))
        keepalive = Keepalive(PING_AFTER, PING_EVERY, PING)
        stream = bool(body.get("stream"))
        return await respond(services.engine, request, stream=stream, codec=codec, keepalive=keepalive)

    @app.post("/v1/messages/count_tokens")
    async def count_tokens() -> Response:
        body = await fields.read_request(CountTokensRequest, "openai")
        request = await native_request(body, counting=True)
        # A generation of no tokens: the prompt is rendered, tokenized and counted, nothing runs.
        finished = await run_to_end(services.engine, request)
        return json_response({"input_tokens": finished.prompt_eval_count})
