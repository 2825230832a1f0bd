"""A generation request inside the engine, and the channel that links it to its HTTP request.

Each :class:`Job` owns a bounded Trio memory channel. The worker thread produces events into it
(through ``run_sync_soon``, so the decode loop never waits for the Trio loop) and the HTTP handler
consumes them. Flow control is a credit semaphore the size of the channel: the thread takes a
credit per event and the consumer returns it on receive, so a slow client pauses generation
instead of growing a buffer.

Cancellation: :meth:`Job.close` is synchronous and idempotent. It marks the job cancelled (the
thread polls that flag every decode step and between prefill chunks), closes the channel, and
removes a still-queued job from the queue at once.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import trio

from inference.backend import SamplingParams, TokenLogprob
from validation.structured import OutputFormat
from validation.toolset import ToolSet

# Events a job buffers before the producer waits: enough to ride out a slow write, small enough
# that a stalled client holds back only a few tokens of work.
CHANNEL_CAPACITY = 64

JobKind = Literal["generate", "load", "unload"]


@dataclass(frozen=True)
class Steering:
    """How a request steers the output, already resolved against the model."""

    output_format: OutputFormat | None = None
    tools: ToolSet | None = None
    tool_format: str | None = None
    tool_required: bool = False
    split_thinking: bool = False
    think: bool | None = None


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
    num_ctx: int = 4096
    stop: Sequence[str] = ()
    keep_alive: float | None = None
    steering: Steering = field(default_factory=Steering)
    template: str | None = None  # a chat template replacing the model's own (from its manifest)


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
    prompt_eval_duration: int = 0
    eval_count: int = 0
    eval_duration: int = 0
    context: Sequence[int] = ()


@dataclass(frozen=True)
class Failed:
    """The last event of a failed job; ``status`` applies when nothing was sent yet."""

    message: str
    status: int = 500


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


class Job:
    """One admitted request: its parameters, its event channel and its cancel flag."""

    def __init__(self, request: GenerationRequest, on_close: Callable[[Job], None] | None = None) -> None:
        self.request = request
        self.submitted = time.perf_counter()
        self.report = JobReport(model=request.model, kind=request.kind)
        self.cancelled = False
        self._send, self._recv = trio.open_memory_channel[Event](CHANNEL_CAPACITY)
        self._credits = threading.Semaphore(CHANNEL_CAPACITY)
        self._trio_token = trio.lowlevel.current_trio_token()
        self._on_close = on_close

    # -- consumer side (Trio) ---------------------------------------------------------------

    async def receive(self) -> Event:
        """The next event. Raises ``trio.EndOfChannel`` if the engine dropped the job."""
        event = await self._recv.receive()
        self._credits.release()
        return event

    def receive_nowait(self) -> Event | None:
        """The next event if one is already waiting, else ``None``."""
        try:
            event = self._recv.receive_nowait()
        except (trio.WouldBlock, trio.EndOfChannel):
            return None
        self._credits.release()
        return event

    def close(self) -> None:
        """Stop caring about this job: cancel it wherever it is (queued, prefill, decode)."""
        if self.cancelled:
            return
        self.cancelled = True
        self._recv.close()
        self._credits.release()
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
        while not self._credits.acquire(timeout=0.05):
            if self.cancelled:
                return False
        if self.cancelled:
            return False
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
