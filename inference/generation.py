"""The per-request decode loop, run on the worker thread for any backend.

It renders and tokenizes the prompt, pulls steps from the backend's generator, applies the
request's limits (``num_predict``, the context window) and stop strings, measures Ollama's timing
metrics, and hands text to the job. It stops pulling the moment the job is cancelled, so at most
the step already in flight completes after a disconnect.
"""

from __future__ import annotations

import logging
import time

from inference.backend import GenerationCancelled, LoadedModel
from inference.job import Failed, Finished, Job, TextChunk
from inference.stops import StopMatcher
from validation.constraint import ConstraintError
from validation.structured import OutputMismatch

log = logging.getLogger("trillm.generation")

MISMATCH = "the reply does not match the requested format"
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
    except Exception as error:
        log.exception("generation for %s failed", job.request.model)
        job.report.outcome = "failed"
        job.emit(Failed(f"an error was encountered while running the model: {error}"))


def _generate(job: Job, model: LoadedModel) -> None:
    request = job.request
    start = time.perf_counter()
    load_duration = start - job.submitted
    text = request.prompt if request.prompt is not None else model.render_chat(request.messages)
    prompt = [*request.context, *model.tokenize(text)]
    if len(prompt) >= request.num_ctx:
        job.report.outcome = "failed"
        job.emit(Failed(f"{CONTEXT_TOO_LONG} ({len(prompt)} >= num_ctx {request.num_ctx})", 400))
        return
    budget = request.num_ctx - len(prompt)
    if request.num_predict >= 0:
        budget = min(budget, request.num_predict)
    stops = StopMatcher(request.stop)
    generated: list[int] = []
    text_out: list[str] = []
    done_reason = "length"
    first_token_at = start
    fmt = request.output_format
    try:
        constraint = None if fmt is None else model.constraint(fmt.grammar)
    except ConstraintError as error:
        job.report.outcome = "failed"
        job.emit(Failed(f"format cannot be enforced for this model: {error}", 400))
        return
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
            if not generated:
                first_token_at = time.perf_counter()
            generated.append(step.token)
            released, stopped = stops.feed(step.text)
            if released:
                text_out.append(released)
                if not job.emit(TextChunk(released)):
                    raise GenerationCancelled
            if stopped or step.eos or (constraint is not None and constraint.finished):
                done_reason = "stop"
                break
    finally:
        steps.close()
    tail = stops.flush()
    if tail:
        text_out.append(tail)
        job.emit(TextChunk(tail))
    end = time.perf_counter()
    if fmt is not None:
        try:
            fmt.validate("".join(text_out))
        except OutputMismatch as error:
            job.report.outcome = "invalid output"
            job.emit(Failed(f"{MISMATCH}: {error} (done_reason: {done_reason})", 422))
            return
    job.report.outcome = "done"
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
