"""Running a job and turning its events into an NDJSON stream or one aggregated object.

The status is decided before the first byte: the handler waits for the job's first event (the
first token, or an error) before it starts the response, so load failures and over-long prompts
get a real status code. After that, an error becomes one ``{"error": ...}`` line.

Cancellation: the job is closed whenever the handler or the body generator stops for any
reason, including the client going away (Quart-Trio cancels both), so generation stops too.
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import trio
from quart import Response, g

from app.protocol.errors import ApiError, ServiceUnavailable, failure_error
from app.protocol.ndjson import NDJSON, json_response, line
from inference.engine.job import Event, Failed, Finished, GenerationRequest, Job, Partial, TextChunk
from inference.engine.scheduler import Engine, EngineBusy

log = logging.getLogger("trillm.http")


class Codec(Protocol):
    """How one API dialect encodes a job's events (NDJSON for Ollama, SSE for OpenAI)."""

    media_type: str

    def head(self, prompt_tokens: int) -> bytes:
        """Sent before the first event of a stream; ``prompt_tokens`` as far as known by then."""
        ...

    def part(self, chunk: TextChunk) -> bytes: ...

    def end(self, finished: Finished) -> bytes: ...

    def error(self, message: str, partial: Partial | None) -> bytes:
        """The stream's last bytes when generation fails after the response began."""
        ...

    def failure(self, partial: Partial) -> dict[str, Any]:
        """The fields a failed reply's error carries besides its message: what was generated."""
        ...

    def whole(self, chunk: TextChunk, finished: Finished) -> dict[str, Any]:
        """The single object for a non-streaming reply (``chunk`` holds everything)."""
        ...


ChunkFn = Callable[[TextChunk], dict[str, Any]]
FinalFn = Callable[[TextChunk, Finished], dict[str, Any]]

EMPTY = TextChunk("")

ENDED_EARLY = "generation ended unexpectedly"


class NdjsonCodec:
    """Ollama's stream: one compact JSON object per line, errors as an ``{"error"}`` line."""

    media_type = NDJSON

    def __init__(self, chunk: ChunkFn, final: FinalFn) -> None:
        self._chunk, self._final = chunk, final

    def head(self, prompt_tokens: int) -> bytes:
        return b""

    def part(self, chunk: TextChunk) -> bytes:
        return line(self._chunk(chunk))

    def end(self, finished: Finished) -> bytes:
        return line(self._final(EMPTY, finished))

    def error(self, message: str, partial: Partial | None) -> bytes:
        return line({"error": message} | (self.failure(partial) if partial else {}))

    def failure(self, partial: Partial) -> dict[str, Any]:
        """``partial`` (the message, or ``response`` and ``thinking``) and the final chunk's
        ``done_reason`` (when the reply ended by itself) and metrics."""
        out = self._final(TextChunk(partial.text, partial.thinking), partial.finished)
        for key in ("model", "created_at", "done", "context"):
            out.pop(key, None)
        if not out.get("done_reason"):
            out.pop("done_reason", None)
        if "message" in out:
            return {"partial": out.pop("message")} | out
        return {"partial": {k: out.pop(k) for k in ("response", "thinking") if k in out}} | out

    def whole(self, chunk: TextChunk, finished: Finished) -> dict[str, Any]:
        return self._final(chunk, finished)


def submit(engine: Engine, request: GenerationRequest) -> Job:
    try:
        return engine.submit_nowait(request)
    except EngineBusy as error:
        raise ServiceUnavailable(str(error)) from error


@dataclass(frozen=True)
class Keepalive:
    """What a stream sends while the prompt is read, for clients that time out on a silent
    connection (Anthropic's ``ping``): when no first event has come ``after`` seconds in, the
    response starts (status 200; a later failure is the codec's error event) and ``ping`` goes
    out every ``every`` seconds until it comes."""

    after: float
    every: float
    ping: bytes


async def respond(
    engine: Engine,
    request: GenerationRequest,
    *,
    stream: bool,
    codec: Codec,
    keepalive: Keepalive | None = None,
) -> Response:
    """Run ``request`` and answer with a stream (``stream``) or a single JSON object."""
    note_enforcement(request)
    job = submit(engine, request)
    try:
        if stream and keepalive is not None:
            with trio.move_on_after(keepalive.after) as waiting:
                first = await _receive(job)
            if waiting.cancelled_caught:
                return _streaming(_stream(job, None, codec, keepalive=keepalive), [job], codec.media_type)
        else:
            first = await _receive(job)
        if isinstance(first, Failed):
            raise _api_error(first, codec)
        if not stream or (isinstance(first, Finished) and first.done_reason in ("load", "unload")):
            return json_response(await _aggregate(job, first, codec))
    except BaseException:
        job.close()
        raise
    return _streaming(_stream(job, first, codec), [job], codec.media_type)


async def run_to_end(engine: Engine, request: GenerationRequest) -> Finished:
    """Run a job that streams nothing (embeddings, a token count) and return its end; its
    failure is the API error. Leaving (the client gone) cancels it like any other."""
    job = submit(engine, request)
    try:
        while True:
            event = await _receive(job)
            if isinstance(event, Finished):
                return event
            if isinstance(event, Failed):
                raise failure_error(event.kind, event.message)
    finally:
        job.close()


ENFORCEMENT_HEADER = "X-Trillm-Enforcement"


def note_enforcement(request: GenerationRequest) -> None:
    """Say (a response header, and the log) when a format or the tools' schemas are enforced only
    in part while decoding: what the grammar skipped is still checked by the validator, so the
    reply is valid or an error."""
    steering = request.steering
    if not steering.approximated:
        return
    skipped = "; ".join(steering.approximated)
    what = "format" if steering.output_format is not None else "tool calls"
    g.enforcement = f"approximate; validated in full; not enforced while decoding: {skipped}"
    log.info(
        "%s for %s enforced in part while decoding (validated in full): %s", what, request.model, skipped
    )


def enforcement_header(response: Response) -> Response:
    """The ``after_request`` hook that adds :data:`ENFORCEMENT_HEADER`."""
    note = getattr(g, "enforcement", None)
    if note is not None:
        response.headers[ENFORCEMENT_HEADER] = note.encode("ascii", "replace").decode()
    return response


def _streaming(body: AsyncIterator[bytes], jobs: list[Job], media_type: str) -> Response:
    for job in jobs:
        weakref.finalize(body, job.close)  # a body that is never iterated still cancels its jobs
    response = Response(body, content_type=media_type)
    response.timeout = None  # Quart's 60 s default would cut long streams silently
    return response


def _api_error(failed: Failed, codec: Codec) -> ApiError:
    extra = codec.failure(failed.partial) if failed.partial is not None else None
    return failure_error(failed.kind, failed.message, extra)


async def respond_all(
    engine: Engine, requests: list[GenerationRequest], *, stream: bool, codecs: Sequence[Codec]
) -> Response | list[dict[str, Any]]:
    """Run several requests together (a list of prompts): every job is submitted before any is
    read, so the engine batches them. Not streamed: each one's ``whole`` object, in order.
    Streamed: one response sending each job's events in turn (the later jobs' events wait in
    their channels meanwhile); its status comes from the first job's first event."""
    jobs: list[Job] = []
    for request in requests[:1]:  # they share their steering
        note_enforcement(request)
    try:
        for request in requests:
            jobs.append(submit(engine, request))
        if not stream:
            return [
                await _aggregate(job, await _receive(job), codec)
                for job, codec in zip(jobs, codecs, strict=True)
            ]
        first = await _receive(jobs[0])
        if isinstance(first, Failed):
            raise _api_error(first, codecs[0])
    except BaseException:
        for job in jobs:
            job.close()
        raise
    return _streaming(_stream_each(jobs, first, codecs), jobs, codecs[0].media_type)


async def _stream_each(jobs: list[Job], first: Event, codecs: Sequence[Codec]) -> AsyncIterator[bytes]:
    try:
        for i, (job, codec) in enumerate(zip(jobs, codecs, strict=True)):
            event = first if i == 0 else await _receive(job)
            failures: list[str] = []
            async for data in _stream(job, event, codec, failures):
                yield data
            if failures:  # the error event ended the stream
                return
    finally:
        for job in jobs:
            job.close()


async def _receive(job: Job) -> Event:
    try:
        return await job.receive()
    except trio.EndOfChannel:
        return Failed(ENDED_EARLY)


async def _aggregate(job: Job, event: Event, codec: Codec) -> dict[str, Any]:
    """Every chunk concatenated: answer text, reasoning, and all tool calls in order."""
    chunks: list[TextChunk] = []
    try:
        while True:
            if isinstance(event, TextChunk):
                chunks.append(event)
            elif isinstance(event, Finished):
                whole = TextChunk(
                    "".join(c.text for c in chunks),
                    "".join(c.thinking for c in chunks),
                    tuple(call for c in chunks for call in c.tool_calls),
                    tuple(score for c in chunks for score in c.logprobs),
                )
                return codec.whole(whole, event)
            else:
                raise _api_error(event, codec)
            event = await _receive(job)
    finally:
        job.close()


async def _stream(
    job: Job,
    event: Event | None,
    codec: Codec,
    failures: list[str] | None = None,
    keepalive: Keepalive | None = None,
) -> AsyncIterator[bytes]:
    """One encoded chunk per event. Events that queued up while the previous write was in
    flight go out in one write (still one chunk each), so a busy loop never falls behind.
    An error that ends the stream is also appended to ``failures``. With no ``event`` yet, the
    stream starts now and sends ``keepalive``'s pings until the first one comes."""
    try:
        pending = [codec.head(job.report.prompt_tokens)]
        if event is None:
            assert keepalive is not None
            yield pending.pop()
            while event is None:
                with trio.move_on_after(keepalive.every):
                    event = await _receive(job)
                if event is None:
                    yield keepalive.ping
        while True:
            next_event: Event | None = event
            while next_event is not None:
                if isinstance(next_event, TextChunk):
                    pending.append(codec.part(next_event))
                elif isinstance(next_event, Finished):
                    yield b"".join(pending) + codec.end(next_event)
                    return
                else:
                    if failures is not None:
                        failures.append(next_event.message)
                    yield b"".join(pending) + codec.error(next_event.message, next_event.partial)
                    return
                next_event = job.receive_nowait()
            yield b"".join(pending)
            pending = []
            event = await _receive(job)
    finally:
        job.close()


def ollama_calls(chunk: TextChunk) -> list[dict[str, Any]]:
    """Tool calls in Ollama's shape (arguments as an object)."""
    return [
        {"id": c.id, "function": {"index": c.index, "name": c.name, "arguments": c.arguments}}
        for c in chunk.tool_calls
    ]


def ollama_logprobs(chunk: TextChunk) -> dict[str, Any]:
    """``{"logprobs": [...]}`` in Ollama's shape when the chunk carries any, else nothing."""
    if not chunk.logprobs:
        return {}
    return {
        "logprobs": [
            {
                "token": s.token,
                "logprob": s.logprob,
                "top_logprobs": [{"token": t, "logprob": v} for t, v in s.top],
            }
            for s in chunk.logprobs
        ]
    }


def metrics(finished: Finished) -> dict[str, Any]:
    """The final chunk's fields after the payload: done_reason and the metrics.

    Zero metrics are omitted, as Ollama does (load and unload replies carry none).
    ``prompt_eval_count`` counts the whole prompt; ``prompt_eval_cached_count`` (Ollama's name)
    says how much of it came from the prefix cache.
    """
    numbers = {
        "total_duration": finished.total_duration,
        "load_duration": finished.load_duration,
        "prompt_eval_count": finished.prompt_eval_count,
        "prompt_eval_cached_count": finished.prompt_eval_cached_count,
        "prompt_eval_duration": finished.prompt_eval_duration,
        "eval_count": finished.eval_count,
        "eval_duration": finished.eval_duration,
    }
    head: dict[str, Any] = {"done": True, "done_reason": finished.done_reason}
    return head | {k: v for k, v in numbers.items() if v}
