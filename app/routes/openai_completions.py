"""``POST /v1/completions``: OpenAI's legacy completions, one choice per prompt.

``prompt`` is a string or a list of strings (langchain-openai's ``OpenAI`` LLM always sends a list):
every prompt becomes its own job, submitted together so the engine batches them, and the reply has
one choice per prompt, ``index`` in the order given. Streamed, each prompt's choice is sent in turn
(the later ones were generated alongside and wait in their channels). ``logprobs`` is the legacy
integer: that many alternatives per token, in the ``tokens`` / ``token_logprobs`` /
``top_logprobs`` / ``text_offset`` shape.
"""

from __future__ import annotations

import secrets
import time
from typing import Any

from quart import Quart, Response

from app.protocol import fields, openai_request
from app.protocol.errors import openai_error
from app.protocol.ndjson import json_response
from app.protocol.requests import CompletionRequest
from app.protocol.sse import DONE, event
from app.routes.job_responses import respond_all
from app.routes.openai_chat import SSE, failed_choice, finish_reason, stream_options, usage
from app.services import Services
from inference.engine.job import Finished, Partial, TextChunk

MAX_PROMPTS = 64
MAX_LOGPROBS = 20


def legacy_logprobs(chunk: TextChunk, offset: int) -> dict[str, Any]:
    """The completions API's logprobs object for ``chunk``, whose text starts at ``offset``."""
    offsets, at = [], offset
    for score in chunk.logprobs:
        offsets.append(at)
        at += len(score.token)
    return {
        "tokens": [s.token for s in chunk.logprobs],
        "token_logprobs": [s.logprob for s in chunk.logprobs],
        "top_logprobs": [dict(s.top) for s in chunk.logprobs],
        "text_offset": offsets,
    }


class CompletionCodec:
    """``text_completion`` objects and events for the prompt at ``index`` of ``count``.

    The codecs of one request share an id and a list of finished prompts, so the last one's
    stream ends with the usage of all of them and the one ``[DONE]``.
    """

    media_type = SSE

    def __init__(
        self,
        base: dict[str, Any],
        *,
        include_usage: bool,
        logprobs: bool,
        index: int = 0,
        count: int = 1,
        done: list[Finished] | None = None,
    ) -> None:
        self._base = base
        self._usage = include_usage
        self._logprobs = logprobs
        self._index, self._last = index, index == count - 1
        self._done = done if done is not None else []
        self._offset = 0

    def _choice(self, text: str, reason: str | None, chunk: TextChunk | None = None) -> dict[str, Any]:
        scores = None
        if self._logprobs and chunk is not None:
            scores = legacy_logprobs(chunk, self._offset)
            self._offset += len(chunk.text)
        return {"index": self._index, "text": text, "logprobs": scores, "finish_reason": reason}

    def _event(self, choice: dict[str, Any]) -> bytes:
        return event(self._base | {"object": "text_completion", "choices": [choice]})

    def head(self, prompt_tokens: int) -> bytes:
        return b""

    def part(self, chunk: TextChunk) -> bytes:
        if not chunk.text and not chunk.logprobs:
            return b""
        return self._event(self._choice(chunk.text, None, chunk))

    def end(self, finished: Finished) -> bytes:
        self._done.append(finished)
        out = self._event(self._choice("", finish_reason(finished, False)))
        if not self._last:
            return out
        if self._usage:
            out += event(
                self._base | {"object": "text_completion", "choices": [], "usage": total(self._done)}
            )
        return out + DONE

    def error(self, message: str, partial: Partial | None) -> bytes:
        extra = self.failure(partial) if partial else None
        return event(openai_error(message, 500, extra=extra)) + DONE

    def failure(self, partial: Partial) -> dict[str, Any]:
        return failed_choice({"index": self._index, "text": partial.text}, partial)

    def whole(self, chunk: TextChunk, finished: Finished) -> dict[str, Any]:
        self._done.append(finished)
        choice = self._choice(chunk.text, finish_reason(finished, False), chunk)
        return self._base | {"object": "text_completion", "choices": [choice], "usage": usage(finished)}


def total(finished: list[Finished]) -> dict[str, Any]:
    """``usage`` over every prompt of the request."""
    sums = [usage(f) for f in finished]
    out = {key: sum(u[key] for u in sums) for key in ("prompt_tokens", "completion_tokens", "total_tokens")}
    cached = sum(u["prompt_tokens_details"]["cached_tokens"] for u in sums)
    return out | {"prompt_tokens_details": {"cached_tokens": cached}}


def _prompts(body: dict[str, Any]) -> list[str]:
    prompt = body.get("prompt")
    prompts = [prompt] if isinstance(prompt, str) else prompt
    if not isinstance(prompts, list) or not prompts or not all(isinstance(p, str) and p for p in prompts):
        raise openai_request.bad("prompt must be a non-empty string or a list of non-empty strings", "prompt")
    if len(prompts) > MAX_PROMPTS:
        raise openai_request.bad(f"prompt holds {len(prompts)} prompts; at most {MAX_PROMPTS}", "prompt")
    return prompts


def _logprobs(body: dict[str, Any]) -> int | None:
    value = body.get("logprobs")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_LOGPROBS:
        raise openai_request.bad(
            f"logprobs must be an integer from 0 to {MAX_LOGPROBS} (alternatives per token)", "logprobs"
        )
    return value


def register(app: Quart, services: Services) -> None:
    @app.post("/v1/completions")
    async def completions() -> Response:
        body = await fields.read_request(CompletionRequest, "openai")
        model = await services.find_model(body.get("model"))
        prompts = _prompts(body)
        top = _logprobs(body)
        if body.get("suffix"):
            raise openai_request.bad("suffix (fill-in-the-middle) is not supported by this model", "suffix")
        native: dict[str, Any] = {"options": openai_request.native_options(body)}
        if top is not None:
            native |= {"logprobs": True, "top_logprobs": top}
        requests = [
            services.generation_request(native, model, [], has_input=True, prompt=prompt, action="generate")
            for prompt in prompts
        ]
        stream, include_usage = stream_options(body)
        base = {
            "id": f"cmpl-{secrets.token_hex(12)}",
            "created": int(time.time()),
            "model": str(body["model"]),
        }
        done: list[Finished] = []
        codecs = [
            CompletionCodec(
                base,
                include_usage=include_usage,
                logprobs=top is not None,
                index=i,
                count=len(prompts),
                done=done,
            )
            for i in range(len(prompts))
        ]
        replies = await respond_all(services.engine, requests, stream=stream, codecs=codecs)
        if isinstance(replies, Response):
            return replies
        choices = [reply["choices"][0] for reply in replies]
        return json_response(base | {"object": "text_completion", "choices": choices, "usage": total(done)})
