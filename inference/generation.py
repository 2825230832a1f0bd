"""The per-request decode loop, run on the worker thread for any backend.

It renders and tokenizes the prompt, pulls steps from the backend's generator, applies the
request's limits (``num_predict``, the context window) and stop strings, measures Ollama's timing
metrics, and hands text to the job. It stops pulling the moment the job is cancelled, so at most
the step already in flight completes after a disconnect.
"""

from __future__ import annotations

import logging
import secrets
import string
import time

from inference.backend import GenerationCancelled, LoadedModel, TokenLogprob
from inference.job import CallOut, Failed, Finished, Job, Steering, TextChunk
from inference.stops import StopMatcher
from validation.constraint import ConstraintError
from validation.grammars import MARKERS, answer_grammar, tool_grammar
from validation.reply import ReplyDelta, ReplyParser
from validation.structured import OutputMismatch

log = logging.getLogger("trillm.generation")

MISMATCH = "the reply does not match the requested format"
INVALID_CALL = "the model produced an invalid tool call"
CONTEXT_TOO_LONG = (
    "the prompt is longer than the context length currently available to the model; "
    "shorten the prompt or raise num_ctx"
)


def _ns(seconds: float) -> int:
    return int(seconds * 1e9)


def run_generation(job: Job, model: LoadedModel) -> None:
    """Generate for ``job`` on ``model``; every outcome ends with one final event or a cancel."""
    try:
        _generate(job, model)
    except GenerationCancelled:
        job.report.outcome = "cancelled"
    except MemoryError as error:
        log.error("out of memory generating for %s: %s", job.request.model, error)
        job.report.outcome = "failed"
        job.emit(
            Failed(f"out of memory while running the model ({error}); try a shorter prompt or num_ctx", 503)
        )
    except Exception as error:
        log.exception("generation for %s failed", job.request.model)
        job.report.outcome = "failed"
        job.emit(Failed(f"an error was encountered while running the model: {error}"))


class InvalidCall(Exception):
    """The model produced a tool call that is malformed or does not fit the declared tools."""


class _Reply:
    """Turns released text into events: reasoning, answer and validated tool calls."""

    def __init__(self, job: Job, inside: bool) -> None:
        steering = job.request.steering
        self._job = job
        self._tools = steering.tools
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
        return answer_grammar(steering.output_format.schema, thinking=True, inside=inside, tokens=tokens)
    if steering.tools is not None and steering.tool_format is not None:
        return tool_grammar(
            steering.tool_format,
            steering.tools.tools,
            thinking=thinking,
            inside=inside,
            tokens=tokens,
            required=steering.tool_required,
        )
    return None


def _generate(job: Job, model: LoadedModel) -> None:
    request = job.request
    steering = request.steering
    start = time.perf_counter()
    load_duration = start - job.submitted
    if request.prompt is not None:
        text = request.prompt
    else:
        tools = steering.tools.tools if steering.tools is not None else ()
        text = model.render_chat(
            request.messages, tools=tools, think=steering.think, template=request.template
        )
    vocab = model.info.extra.get("vocab_size")
    if isinstance(vocab, int) and any(t >= vocab for t in request.context):
        job.report.outcome = "failed"
        job.emit(Failed(f"context holds token ids outside this model's vocabulary of {vocab}", 400))
        return
    prompt = [*request.context, *model.tokenize(text)]
    job.report.prompt_tokens = len(prompt)
    if len(prompt) >= request.num_ctx:
        job.report.outcome = "failed"
        job.emit(Failed(f"{CONTEXT_TOO_LONG} ({len(prompt)} >= num_ctx {request.num_ctx})", 400))
        return
    budget = request.num_ctx - len(prompt)
    if request.num_predict >= 0:
        budget = min(budget, request.num_predict)
    inside = steering.split_thinking and text.rstrip().endswith("<think>")
    grammar = _grammar(steering, model, inside)
    try:
        constraint = None if grammar is None else model.constraint(grammar)
    except ConstraintError as error:
        job.report.outcome = "failed"
        job.emit(Failed(f"format cannot be enforced for this model: {error}", 400))
        return
    reply = _Reply(job, inside)
    stops = StopMatcher(request.stop)
    generated: list[int] = []
    done_reason = "length"
    first_token_at = last_token_at = start
    steps = model.generate(prompt, request.params, job.should_stop, constraint)
    try:
        while len(generated) < budget:
            step = next(steps, None)
            if step is None:
                done_reason = "stop"
                break
            job.report.decode_steps += 1
            if job.cancelled:
                job.report.steps_after_cancel += 1
                raise GenerationCancelled
            now = time.perf_counter()
            if not generated:
                first_token_at = now
                job.report.first_token_seconds = now - job.submitted
            else:
                job.report.token_gaps.append(now - last_token_at)
            last_token_at = now
            generated.append(step.token)
            if step.logprob is not None:
                reply.scores.append(step.logprob)
            released, stopped = stops.feed(step.text)
            if released and not reply.feed(released):
                raise GenerationCancelled
            if stopped or step.eos or (constraint is not None and constraint.finished):
                done_reason = "stop"
                break
        if not (reply.feed(stops.flush()) and reply.finish()):
            raise GenerationCancelled
        if steering.tool_required and not reply.calls:
            raise InvalidCall("a tool call was required but the model answered without one")
    except InvalidCall as error:
        job.report.outcome = "invalid tool call"
        job.emit(Failed(f"{INVALID_CALL}: {error}", 422))
        return
    finally:
        steps.close()
        job.report.generated_tokens = len(generated)
    end = time.perf_counter()
    if steering.output_format is not None:
        try:
            steering.output_format.validate("".join(reply.answer))
        except OutputMismatch as error:
            job.report.outcome = "invalid output"
            job.emit(Failed(f"{MISMATCH}: {error} (done_reason: {done_reason})", 422))
            return
    job.report.outcome = "done"
    job.report.done_reason = done_reason
    job.emit(
        Finished(
            done_reason=done_reason,
            total_duration=_ns(end - job.submitted),
            load_duration=_ns(load_duration),
            prompt_eval_count=len(prompt),
            prompt_eval_duration=_ns(first_token_at - start),
            eval_count=len(generated),
            eval_duration=_ns(end - first_token_at),
            context=[*prompt, *generated],
        )
    )
