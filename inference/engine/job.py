"""A generation request inside the engine, and the channel that links it to its HTTP request.

Each :class:`Job` owns a Trio memory channel. The worker thread produces events into it (through
``run_sync_soon``, so the decode loop never waits for the Trio loop) and the HTTP handler consumes
them. The producer never blocks: the job shares a batch with other requests, and one slow reader
must not hold the others back. What a slow reader lets pile up is bounded by its token budget, and
a reader that falls :data:`MAX_BACKLOG` events behind is dropped as gone.

Cancellation: :meth:`Job.close` is synchronous and idempotent. It marks the job cancelled (the
thread polls that flag every decode step and between prefill chunks), closes the channel, and
removes a still-queued job from the queue at once.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import trio

from inference.backends.base import SamplingParams, TokenLogprob
from inference.failures import FailureKind
from validation.structured import OutputFormat
from validation.toolset import ToolSet

# Events a reader may fall behind before its job is treated as abandoned: far more than a slow
# network write needs, few enough that a stalled client holds a bounded amount of memory.
MAX_BACKLOG = 8192

JobKind = Literal["generate", "embed", "load", "unload"]


@dataclass(frozen=True)
class Steering:
    """How a request steers the output, already resolved against the model."""

    output_format: OutputFormat | None = None
    tools: ToolSet | None = None
    tool_format: str | None = None
    tool_required: bool = False  # the reply is tool calls only (tool_choice required or named)
    tool_parallel: bool = True  # more than one call allowed (OpenAI's parallel_tool_calls)
    tool_approximated: tuple[str, ...] = ()
    """What the call grammar does not enforce of the tools' schemas (the validator checks all)."""
    split_thinking: bool = False
    think: bool | None = None

    @property
    def approximated(self) -> tuple[str, ...]:
        """What decoding leaves to the validator, of the format or the tools."""
        if self.output_format is not None:
            return self.output_format.approximated
        return self.tool_approximated


Truncation = Literal["turns", "tokens", "off"]


@dataclass(frozen=True)
class GenerationRequest:
    """Everything the engine needs to run one request, validated by the HTTP layer."""

    model: str
    path: Path
    kind: JobKind = "generate"
    messages: Sequence[dict[str, object]] = ()
    prompt: str | None = None
    context: Sequence[int] = ()
    params: SamplingParams = field(default_factory=SamplingParams)
    num_predict: int = -1
    num_ctx: int | None = None  # the window asked for; None: the engine's default
    # An over-long prompt: earlier chat turns dropped, the middle of a single prompt cut, or a 400
    # (inference/engine/truncation.py).
    truncate: Truncation = "turns"
    num_keep: int = 4  # tokens a shortened single prompt keeps from its start
    stop: Sequence[str] = ()
    keep_alive: float | None = None
    steering: Steering = field(default_factory=Steering)
    template: str | None = None  # a chat template replacing the model's own (from its manifest)
    inputs: Sequence[str | Sequence[int]] = ()  # what an "embed" job embeds (texts or token ids)


@dataclass(frozen=True)
class CallOut:
    """A complete, validated tool call as the API reports it."""

    id: str
    index: int
    name: str
    arguments: dict[str, Any]


@dataclass(frozen=True)
class TextChunk:
    """Generated output, safe to show (no partial characters, no stop-string prefixes, no marker
    halves): answer text, reasoning, and tool calls completed by this step."""

    text: str
    thinking: str = ""
    tool_calls: tuple[CallOut, ...] = ()
    logprobs: tuple[TokenLogprob, ...] = ()


@dataclass(frozen=True)
class Finished:
    """The last event of a successful job, with Ollama's metrics (durations in nanoseconds)."""

    done_reason: str
    total_duration: int = 0
    load_duration: int = 0
    prompt_eval_count: int = 0
    prompt_eval_cached_count: int = 0
    prompt_eval_duration: int = 0
    eval_count: int = 0
    eval_duration: int = 0
    context: Sequence[int] = ()
    stop_sequence: str | None = None  # the request's stop string that ended the reply, if one did
    vectors: Sequence[Sequence[float]] = ()  # an "embed" job's pooled vectors, one per input


@dataclass(frozen=True)
class Partial:
    """What a reply that failed its format or tool checks had produced, so nothing is lost:
    ``text`` as the model wrote it outside its reasoning (call markers and all), ``thinking``,
    and the metrics; ``finished.done_reason`` is empty when the check cut the reply short."""

    text: str
    thinking: str
    finished: Finished


@dataclass(frozen=True)
class Failed:
    """The last event of a failed job; ``kind`` says why (the HTTP status, when nothing was sent yet)."""

    message: str
    kind: FailureKind = FailureKind.INTERNAL
    partial: Partial | None = None


Event = TextChunk | Finished | Failed


@dataclass
class JobReport:
    """What happened to a job, kept by the engine for statistics and tests."""

    model: str
    outcome: str = "queued"
    decode_steps: int = 0
    steps_after_cancel: int = 0
    prefill_checks: int = 0
    checks_after_cancel: int = 0
    started: bool = False
    kind: str = "generate"
    prompt_tokens: int = 0
    generated_tokens: int = 0
    done_reason: str = ""
    queue_seconds: float = 0.0  # submitted -> picked up by the worker
    first_token_seconds: float | None = None  # submitted -> first token
    total_seconds: float = 0.0  # submitted -> end
    token_gaps: list[float] = field(default_factory=list)  # seconds between tokens, until observed
    cached_tokens: int = 0  # prompt tokens whose KV came from the prefix cache
    batch_size: int = 0  # sequences in the model's batch when this one joined (itself included)
    stop_seconds: float | None = None  # client gone -> the engine let go of the job (cancelled only)


class Job:
    """One admitted request: its parameters, its event channel and its cancel flag."""

    def __init__(self, request: GenerationRequest, on_close: Callable[[Job], None] | None = None) -> None:
        self.request = request
        self.submitted = time.perf_counter()
        self.report = JobReport(model=request.model, kind=request.kind)
        self.cancelled = False
        self.cancelled_at: float | None = None  # perf_counter when the client went away
        self._send, self._recv = trio.open_memory_channel[Event](math.inf)
        self._emitted = 0  # written by the producer only
        self._received = 0  # written by the consumer only
        self._trio_token = trio.lowlevel.current_trio_token()
        self._on_close = on_close

    # -- consumer side (Trio) ---------------------------------------------------------------

    async def receive(self) -> Event:
        """The next event. Raises ``trio.EndOfChannel`` if the engine dropped the job."""
        event = await self._recv.receive()
        self._received += 1
        return event

    def receive_nowait(self) -> Event | None:
        """The next event if one is already waiting, else ``None``."""
        try:
            event = self._recv.receive_nowait()
        except (trio.WouldBlock, trio.EndOfChannel):
            return None
        self._received += 1
        return event

    def close(self) -> None:
        """Stop caring about this job: cancel it wherever it is (queued, prefill, decode)."""
        if self.cancelled:
            return
        self.cancelled_at = time.perf_counter()
        self.cancelled = True
        self._recv.close()
        if self._on_close is not None:
            self._on_close(self)

    def abort(self, message: str) -> None:
        """Engine side: stop the work and tell a still-listening client why."""
        self.cancelled = True
        self.fail(message)

    def fail(self, message: str) -> None:
        """From the Trio thread: end the job with an error event if the client still listens."""
        try:
            self._send.send_nowait(Failed(message))
        except (trio.WouldBlock, trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        self._send.close()

    # -- producer side (worker thread) -------------------------------------------------------

    def should_stop(self) -> bool:
        """Polled by the backend between prefill chunks."""
        self.report.prefill_checks += 1
        if self.cancelled:
            self.report.checks_after_cancel += 1
        return self.cancelled

    def emit(self, event: Event) -> bool:
        """Hand ``event`` to the consumer; False once the consumer has gone away."""
        if self.cancelled:
            return False
        if self._emitted - self._received >= MAX_BACKLOG:
            self.cancelled = True  # not read for thousands of tokens: as good as gone
            return False
        self._emitted += 1
        try:
            self._trio_token.run_sync_soon(self._deliver, event)
        except trio.RunFinishedError:
            self.cancelled = True
        return not self.cancelled

    def _deliver(self, event: Event) -> None:
        try:
            self._send.send_nowait(event)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            self.cancelled = True
        if isinstance(event, Finished | Failed):
            self._send.close()

    def end_unheard(self) -> None:
        """Close the producer side from the Trio thread (job dropped before it ran)."""
        self._send.close()
