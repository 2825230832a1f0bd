"""``POST /v1/responses``: OpenAI's Responses API on the same engine, stateless.

The body is translated into the native chat request (``app/protocol/responses_request.py``) and run
as ``/api/chat`` runs; :class:`ResponsesCodec` encodes the job's events as a ``response`` object,
or as the documented stream of named events: ``response.created`` and ``response.in_progress``,
then for each output item (``reasoning``, ``message``, ``function_call``) its ``added`` event,
deltas and ``done`` events, and ``response.completed`` (``response.incomplete`` when the token
limit cut the reply; ``error`` and ``response.failed`` when it failed). Every event carries a
``sequence_number``.
"""

from __future__ import annotations

import json
import secrets
import time
from typing import Any

from quart import Quart, Response

from app.protocol import fields, responses_request
from app.protocol.responses_request import ResponsesRequest
from app.protocol.sse import event
from app.routes.job_responses import respond
from app.services import Services
from inference.engine.job import CallOut, Finished, Partial, TextChunk

SSE = "text/event-stream"


def _id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(12)}"


def usage(finished: Finished) -> dict[str, Any]:
    return {
        "input_tokens": finished.prompt_eval_count,
        "input_tokens_details": {"cached_tokens": finished.prompt_eval_cached_count},
        "output_tokens": finished.eval_count,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": finished.prompt_eval_count + finished.eval_count,
    }


def call_item(call: CallOut) -> dict[str, Any]:
    return {
        "type": "function_call",
        "id": _id("fc"),
        "call_id": call.id,
        "name": call.name,
        "arguments": json.dumps(call.arguments, ensure_ascii=False),
        "status": "completed",
    }


def text_part(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def reasoning_part(text: str) -> dict[str, Any]:
    return {"type": "reasoning_text", "text": text}


class ResponsesCodec:
    """A ``response`` object, or its stream of events; the request's settings are echoed."""

    media_type = SSE

    def __init__(self, body: dict[str, Any]) -> None:
        text = body.get("text") or {}
        self._base: dict[str, Any] = {
            "id": _id("resp"),
            "object": "response",
            "created_at": int(time.time()),
            "model": body.get("model"),
            "instructions": body.get("instructions"),
            "max_output_tokens": body.get("max_output_tokens"),
            "metadata": body.get("metadata") or {},
            "parallel_tool_calls": body.get("parallel_tool_calls", True),
            "previous_response_id": None,
            "reasoning": {"effort": (body.get("reasoning") or {}).get("effort"), "summary": None},
            "store": False,
            "temperature": body.get("temperature", 1.0),
            "text": {"format": text.get("format") or {"type": "text"}},
            "tool_choice": body.get("tool_choice", "auto"),
            "tools": body.get("tools") or [],
            "top_p": body.get("top_p", 1.0),
            "truncation": "disabled",
            "user": body.get("user"),
            "error": None,
            "incomplete_details": None,
        }
        self._sequence = 0
        self._items: list[dict[str, Any]] = []
        self._open: dict[str, Any] | None = None  # the reasoning or message item being written

    # -- the stream ----------------------------------------------------------------------------

    def _event(self, kind: str, **data: Any) -> bytes:
        out = event({"type": kind, "sequence_number": self._sequence} | data, kind)
        self._sequence += 1
        return out

    def _response(self, status: str, output: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
        return self._base | {"status": status, "output": output} | extra

    def head(self, prompt_tokens: int) -> bytes:
        started = self._response("in_progress", [], usage=None)
        return self._event("response.created", response=started) + self._event(
            "response.in_progress", response=started
        )

    def _start(self, kind: str) -> bytes:
        """Close the open item unless it is of ``kind``, and open one of ``kind``."""
        if self._open is not None and self._open["type"] == kind:
            return b""
        out = self._close()
        if kind == "message":
            item: dict[str, Any] = {"type": "message", "id": _id("msg"), "status": "in_progress"}
            item["role"] = "assistant"
            part = text_part("")
        else:
            item = {"type": "reasoning", "id": _id("rs"), "summary": []}
            part = reasoning_part("")
        self._open = item | {"content": []}
        self._items.append(self._open)
        index = len(self._items) - 1
        out += self._event("response.output_item.added", output_index=index, item=self._open)
        self._open["content"] = [part]
        return out + self._event(
            "response.content_part.added", item_id=item["id"], output_index=index, content_index=0, part=part
        )

    def _close(self) -> bytes:
        item, self._open = self._open, None
        if item is None:
            return b""
        index = self._items.index(item)
        part = item["content"][0]
        where = {"item_id": item["id"], "output_index": index, "content_index": 0}
        if item["type"] == "message":
            item["status"] = "completed"
            out = self._event("response.output_text.done", **where, text=part["text"], logprobs=[])
        else:
            out = self._event("response.reasoning_text.done", **where, text=part["text"])
        out += self._event("response.content_part.done", **where, part=part)
        return out + self._event("response.output_item.done", output_index=index, item=item)

    def part(self, chunk: TextChunk) -> bytes:
        out = b""
        if chunk.thinking:
            out += self._start("reasoning")
            assert self._open is not None
            self._open["content"][0]["text"] += chunk.thinking
            where = {"item_id": self._open["id"], "output_index": len(self._items) - 1, "content_index": 0}
            out += self._event("response.reasoning_text.delta", **where, delta=chunk.thinking)
        if chunk.text:
            out += self._start("message")
            assert self._open is not None
            self._open["content"][0]["text"] += chunk.text
            where = {"item_id": self._open["id"], "output_index": len(self._items) - 1, "content_index": 0}
            out += self._event("response.output_text.delta", **where, delta=chunk.text, logprobs=[])
        if chunk.tool_calls:
            out += self._close()
        for call in chunk.tool_calls:
            item = call_item(call)
            self._items.append(item)
            index = len(self._items) - 1
            arguments = item["arguments"]
            out += self._event(
                "response.output_item.added",
                output_index=index,
                item=item | {"arguments": "", "status": "in_progress"},
            )
            out += self._event(
                "response.function_call_arguments.delta",
                item_id=item["id"],
                output_index=index,
                delta=arguments,
            )
            out += self._event(
                "response.function_call_arguments.done",
                item_id=item["id"],
                output_index=index,
                name=item["name"],
                arguments=arguments,
            )
            out += self._event("response.output_item.done", output_index=index, item=item)
        return out

    def end(self, finished: Finished) -> bytes:
        out = self._close()
        final = self._final(self._items, finished)
        kind = "response.completed" if final["status"] == "completed" else "response.incomplete"
        return out + self._event(kind, response=final)

    def error(self, message: str, partial: Partial | None) -> bytes:
        out = self._event("error", code="server_error", message=message, param=None)
        failed = self._response(
            "failed",
            self._items,
            error={"code": "server_error", "message": message},
            usage=usage(partial.finished) if partial else None,
        )
        return out + self._event("response.failed", response=failed)

    # -- one object ----------------------------------------------------------------------------

    def _final(self, output: list[dict[str, Any]], finished: Finished) -> dict[str, Any]:
        if finished.done_reason == "length":
            reason = {"reason": "max_output_tokens"}
            return self._response("incomplete", output, incomplete_details=reason, usage=usage(finished))
        return self._response("completed", output, usage=usage(finished))

    @staticmethod
    def _output(chunk: TextChunk) -> list[dict[str, Any]]:
        output: list[dict[str, Any]] = []
        if chunk.thinking:
            item = {"type": "reasoning", "id": _id("rs"), "summary": []}
            output.append(item | {"content": [reasoning_part(chunk.thinking)]})
        if chunk.text or not chunk.tool_calls:
            item = {"type": "message", "id": _id("msg"), "status": "completed", "role": "assistant"}
            output.append(item | {"content": [text_part(chunk.text)]})
        return output + [call_item(call) for call in chunk.tool_calls]

    def failure(self, partial: Partial) -> dict[str, Any]:
        output = self._output(TextChunk(partial.text, partial.thinking))
        return {"partial": {"output": output}, "usage": usage(partial.finished)}

    def whole(self, chunk: TextChunk, finished: Finished) -> dict[str, Any]:
        return self._final(self._output(chunk), finished)


def register(app: Quart, services: Services) -> None:
    @app.post("/v1/responses")
    async def responses() -> Response:
        body = await fields.read_request(ResponsesRequest, "openai")
        model = await services.find_model(body.get("model"))
        request = await services.translated_chat(responses_request.native_chat(body), model)
        codec = ResponsesCodec(body)
        return await respond(services.engine, request, stream=bool(body.get("stream")), codec=codec)
