"""One request's generation, run on the worker thread for any backend.

:class:`Generation` renders and tokenizes the prompt, takes the steps the engine's batch hands it,
applies the request's limits (``num_predict``, the context window) and stop strings, measures
Ollama's timing metrics, and hands text to the job. The engine removes a sequence from its batch
the moment its job is cancelled, so at most the step already in flight completes after a
disconnect.
"""

from __future__ import annotations

import logging
import secrets
import string
import time
from collections.abc import Sequence

from inference.backends.base import (
    GenerationCancelled,
    LoadedModel,
    ModelUnavailable,
    Step,
    TokenLogprob,
    WrongModelKind,
)
from inference.engine import truncation
from inference.engine.job import CallOut, Failed, Finished, Job, Partial, Steering, TextChunk
from inference.engine.stops import StopMatcher
from inference.failures import FailureKind
from validation.constraint import ConstraintError, TokenConstraint
from validation.grammars import MARKERS, answer_grammar, tool_grammar
from validation.images import ImageProblem, images_in
from validation.reply import ReplyDelta, ReplyParser
from validation.structured import OutputMismatch

log = logging.getLogger("trillm.generation")

MISMATCH = "the reply does not match the requested format"
INVALID = FailureKind.INVALID_REQUEST
INVALID_CALL = "the model produced an invalid tool call"
CONTEXT_TOO_LONG = (
    "the prompt is longer than the context length currently available to the model; "
    "shorten the prompt or raise num_ctx"
)
CONTEXT_TOO_LONG_KEPT = (
    "the prompt is longer than the context length even with only the system messages, tools and "
    "the latest turn; shorten them or raise num_ctx"
)


def _ns(seconds: float) -> int:
    return int(seconds * 1e9)


class InvalidCall(Exception):
    """The model produced a tool call that is malformed or does not fit the declared tools."""


class _Reply:
    """Turns released text into events: reasoning, answer and validated tool calls."""

    def __init__(self, job: Job, inside: bool) -> None:
        steering = job.request.steering
        self._job = job
        self._tools = steering.tools
        self._keep_thinking = steering.think is not False
        self._parser = ReplyParser(
            split_thinking=steering.split_thinking,
            inside=inside,
            keep_thinking=steering.think is not False,
            tool_format=steering.tool_format if steering.tools else None,
        )
        self.answer: list[str] = []
        self.calls = 0
        self.scores: list[TokenLogprob] = []  # logprobs of tokens not yet sent
        # Plain text needs no parsing: the per-token path stays as short as it can be.
        self._plain = not steering.split_thinking and not steering.tools

    def feed(self, text: str) -> bool:
        if self._plain:
            if not text:
                return True
            self.answer.append(text)
            return self._job.emit(TextChunk(text, logprobs=self._take_scores()))
        return self._send(self._parser.feed(text))

    def finish(self) -> bool:
        return self._send(self._parser.finish(), final=True)

    def _send(self, delta: ReplyDelta, final: bool = False) -> bool:
        if delta.errors:
            raise InvalidCall(delta.errors[0])
        calls = []
        for call in delta.calls:
            problem = self._tools.problem(call) if self._tools is not None else "no tools were declared"
            if problem:
                raise InvalidCall(problem)
            calls.append(CallOut(new_call_id(), self.calls, call.name, call.arguments))
            self.calls += 1
        self.answer.append(delta.content)
        if not delta and not (final and self.scores):
            return True
        return self._job.emit(TextChunk(delta.content, delta.thinking, tuple(calls), self._take_scores()))

    def written(self) -> tuple[str, str]:
        """The reply so far as the model wrote it: answer text (markers and all) and reasoning."""
        if self._plain:
            return "".join(self.answer), ""
        thinking = "".join(self._parser.reasoning) if self._keep_thinking else ""
        return "".join(self._parser.written), thinking

    def _take_scores(self) -> tuple[TokenLogprob, ...]:
        scores, self.scores = tuple(self.scores), []
        return scores


def new_call_id() -> str:
    return "call_" + "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(8))


def _grammar(steering: Steering, model: LoadedModel, inside: bool) -> str | None:
    """What the constraint enforces: the answer's format, or the declared tools' calls."""
    thinking = steering.split_thinking
    if steering.output_format is not None and not thinking:
        return steering.output_format.grammar
    tokens = model.single_tokens(MARKERS)
    if steering.output_format is not None:
        return answer_grammar(steering.output_format.decoded, thinking=True, inside=inside, tokens=tokens)
    if steering.tools is not None and steering.tool_format is not None:
        marked = tuple(sorted(tokens.items()))
        key: tuple[object, ...] = (steering.tool_format, steering.tools.text, thinking, inside, marked)
        key += (steering.tool_required, steering.tool_parallel, bool(steering.tool_approximated))
        if key not in _TOOL_GRAMMARS:
            _TOOL_GRAMMARS[key] = tool_grammar(
                steering.tool_format,
                steering.tools.tools,
                thinking=thinking,
                inside=inside,
                tokens=tokens,
                required=steering.tool_required,
                parallel=steering.tool_parallel,
                lenient=bool(steering.tool_approximated),
            )
            while len(_TOOL_GRAMMARS) > 64:
                _TOOL_GRAMMARS.pop(next(iter(_TOOL_GRAMMARS)))
        return _TOOL_GRAMMARS[key]
    return None


# Tool grammars by what they are built from: clients send the same tools with every turn, and
# building the grammar of many tools on the decoding thread holds every stream up.
_TOOL_GRAMMARS: dict[tuple[object, ...], str | None] = {}


class Generation:
    """One request's decode state, fed one step at a time by the engine's batch loop.

    :meth:`prepare` renders and tokenizes the prompt and builds the constraint; :meth:`feed`
    takes each sampled step and answers whether the sequence goes on; :meth:`end` and
    :meth:`fail` close it from outside. Every path emits exactly one final event (or none when the
    client has gone), and ``done`` turns true.
    """

    def __init__(self, job: Job, model: LoadedModel, num_ctx: int = 4096) -> None:
        self.job = job
        self.model = model
        self.num_ctx = num_ctx  # the window asked for; the loaded model may hold less
        self.done = False
        self.constraint: TokenConstraint | None = None
        self.prompt: list[int] = []
        self.media: object = None  # a vision model's prepared images (Admission.media)
        self._budget = 0
        self._reply: _Reply | None = None
        self._stops = StopMatcher(job.request.stop)
        self._generated: list[int] = []
        self._start = self._first_token_at = self._last_token_at = time.perf_counter()

    # -- start ---------------------------------------------------------------------------------

    def prepare(self) -> bool:
        """Build the prompt and constraint; False when the request ended here (error or no budget)."""
        job, model = self.job, self.model
        request = job.request
        steering = request.steering
        tools = steering.tools.for_template if steering.tools is not None else ()

        def render(messages: Sequence[dict[str, object]]) -> str:
            return model.render_chat(messages, tools=tools, think=steering.think, template=request.template)

        text = request.prompt if request.prompt is not None else render(request.messages)
        vocab = model.info.extra.get("vocab_size")
        if isinstance(vocab, int) and any(t >= vocab for t in request.context):
            return self._failed(
                "failed", f"context holds token ids outside this model's vocabulary of {vocab}", INVALID
            )
        images = [image for message in request.messages for image in images_in(message)]
        if images:
            try:
                tokens, self.media = model.tokenize_with_images(text, images)
            except (ImageProblem, WrongModelKind) as problem:
                return self._failed("failed", str(problem), INVALID)
        else:
            tokens = model.tokenize(text)
        self.prompt = [*request.context, *tokens]
        window = self.num_ctx
        if 0 < model.info.context_length < window:  # the loaded model holds no more than this
            window = model.info.context_length
        if len(self.prompt) >= window:
            limit = f"num_ctx {window}" if window == self.num_ctx else f"the model's context of {window}"
            message = f"{CONTEXT_TOO_LONG} ({len(self.prompt)} >= {limit})"
            fitted = None
            if images:  # dropping turns could drop an image, cutting tokens could cut one in two
                message = f"{message}; a prompt with images is never shortened"
            elif request.truncate != "off":
                fitted = self._fit(window, lambda messages: model.tokenize(render(messages)))
                if fitted is None:
                    message = f"{CONTEXT_TOO_LONG_KEPT} ({limit})"
            if fitted is None:
                job.report.prompt_tokens = len(self.prompt)
                return self._failed("failed", message, INVALID)
            log.info(
                "prompt of %d tokens shortened to %d for %s (%s): dropped %d earlier messages, "
                "%d tokens",
                len(self.prompt), len(fitted.tokens), request.model, limit,
                fitted.dropped_messages, fitted.dropped_tokens,
            )  # fmt: skip
            self.prompt = fitted.tokens
        job.report.prompt_tokens = len(self.prompt)
        self._budget = window - len(self.prompt)
        if request.num_predict >= 0:
            self._budget = min(self._budget, request.num_predict)
        inside = steering.split_thinking and text.rstrip().endswith("<think>")
        grammar = _grammar(steering, model, inside)
        try:
            self.constraint = None if grammar is None else model.constraint(grammar)
        except ConstraintError as error:
            return self._failed("failed", f"format cannot be enforced for this model: {error}", INVALID)
        self._reply = _Reply(job, inside)
        if self._budget <= 0:
            self._finish("length")
            return False
        return True

    def _fit(self, window: int, tokens_of: truncation.Render) -> truncation.Fitted | None:
        """The prompt shortened to leave room for a reply: a chat's earlier turns dropped, or the
        middle of a single prompt (with its context) cut; ``None`` if a chat cannot fit."""
        request = self.job.request
        limit = window - truncation.room_for_reply(window, request.num_predict)
        if request.truncate == "turns" and request.prompt is None:
            return truncation.fit_chat(request.messages, tokens_of, limit)
        return truncation.fit_tokens(self.prompt, limit, request.num_keep)

    # -- each step -----------------------------------------------------------------------------

    def feed(self, step: Step) -> bool:
        """Take one sampled step; False once this generation is over."""
        job = self.job
        assert self._reply is not None
        try:
            job.report.decode_steps += 1
            if job.cancelled:
                job.report.steps_after_cancel += 1
                raise GenerationCancelled
            now = time.perf_counter()
            if not self._generated:
                self._first_token_at = now
                job.report.first_token_seconds = now - job.submitted
            else:
                job.report.token_gaps.append(now - self._last_token_at)
            self._last_token_at = now
            self._generated.append(step.token)
            if step.logprob is not None:
                self._reply.scores.append(step.logprob)
            released, stopped = self._stops.feed(step.text)
            if released and not self._reply.feed(released):
                raise GenerationCancelled
            if stopped or step.eos or (self.constraint is not None and self.constraint.finished):
                return self._finish("stop")
            if len(self._generated) >= self._budget:
                return self._finish("length")
            return True
        except GenerationCancelled:
            return self.cancel()
        except InvalidCall as error:
            return self._rejected("invalid tool call", f"{INVALID_CALL}: {error}", "")
        except Exception as error:  # a parser or validator bug ends this request only
            return self.fail(error)

    # -- ends ----------------------------------------------------------------------------------

    def end(self) -> bool:
        """The backend has no more tokens for this sequence."""
        return self._finish("stop")

    def cancel(self) -> bool:
        self._close("cancelled")
        return False

    def fail(self, error: BaseException) -> bool:
        """End with the backend's ``error`` (out of memory, or an internal failure)."""
        if isinstance(error, GenerationCancelled):
            return self.cancel()
        if isinstance(error, ModelUnavailable):
            message = f"model '{self.job.request.model}' stopped: {error}"
            return self._failed("failed", message, FailureKind.UNAVAILABLE)
        if isinstance(error, MemoryError):
            log.error("out of memory generating for %s: %s", self.job.request.model, error)
            message = f"out of memory while running the model ({error}); try a shorter prompt or num_ctx"
            return self._failed("failed", message, FailureKind.OUT_OF_MEMORY)
        log.error("generation for %s failed", self.job.request.model, exc_info=error)
        return self._failed(
            "failed", f"an error was encountered while running the model: {error}", FailureKind.INTERNAL
        )

    def _failed(self, outcome: str, message: str, kind: FailureKind, partial: Partial | None = None) -> bool:
        if not self.done:
            self._close(outcome)
            self.job.emit(Failed(message, kind, partial))
        return False

    def _rejected(self, outcome: str, message: str, done_reason: str) -> bool:
        """The reply failed its format or tool checks; it goes back with the error."""
        assert self._reply is not None
        text, thinking = self._reply.written()
        partial = Partial(text, thinking, self._metrics(done_reason, time.perf_counter()))
        return self._failed(outcome, message, FailureKind.REJECTED_REPLY, partial)

    def _metrics(self, done_reason: str, end: float) -> Finished:
        job = self.job
        first = self._first_token_at if self._generated else end
        return Finished(
            done_reason=done_reason,
            total_duration=_ns(end - job.submitted),
            load_duration=_ns(self._start - job.submitted),
            prompt_eval_count=len(self.prompt),
            prompt_eval_cached_count=job.report.cached_tokens,
            prompt_eval_duration=_ns(first - self._start),
            eval_count=len(self._generated),
            eval_duration=_ns(end - first),
            context=[*self.prompt, *self._generated],
            stop_sequence=self._stops.matched,
        )

    def _close(self, outcome: str) -> None:
        self.done = True
        self.job.report.outcome = outcome
        self.job.report.generated_tokens = len(self._generated)

    def _finish(self, done_reason: str) -> bool:
        if self.done:
            return False
        job, reply = self.job, self._reply
        assert reply is not None
        steering = job.request.steering
        try:
            if not (reply.feed(self._stops.flush()) and reply.finish()):
                return self.cancel()
            if steering.tool_required and not reply.calls:
                raise InvalidCall("a tool call was required but the model answered without one")
        except InvalidCall as error:
            message = f"{INVALID_CALL}: {error}{_ended_by(done_reason)}"
            return self._rejected("invalid tool call", message, done_reason)
        end = time.perf_counter()
        if steering.output_format is not None:
            try:
                steering.output_format.validate("".join(reply.answer))
            except OutputMismatch as error:
                message = f"{MISMATCH}: {error}{_ended_by(done_reason)}"
                return self._rejected("invalid output", message, done_reason)
        self._close("done")
        job.report.done_reason = done_reason
        job.emit(self._metrics(done_reason, end))
        return False


def _ended_by(done_reason: str) -> str:
    if done_reason == "length":
        return " (done_reason: length: the token limit ended the reply; raise num_predict or max_tokens)"
    return f" (done_reason: {done_reason})"
