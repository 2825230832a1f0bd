"""One embedding request inside the engine: its inputs tokenized, then computed a batch at a time.

:class:`EmbedWork` is to an ``embed`` job what :class:`~inference.engine.generation.Generation` is
to a ``generate`` one. :meth:`EmbedWork.prepare` tokenizes every input and applies ``truncate``
(each input cut to the model's window, or a 400 when that is off); :meth:`EmbedWork.step`
computes the next inputs in one forward pass: up to :data:`STEP_INPUTS` inputs and
:data:`STEP_TOKENS` tokens when nothing else runs, and when other models are streaming only as
many as fit in :data:`SHARED_STEP_SECONDS` (at least one input), judged by how long the previous
batches took per token. The engine's loop calls ``step`` between the decode steps of the other
models, so a request of hundreds of inputs slows the streams beside it instead of stopping them,
and a client that leaves stops the work at the next batch. The last step emits one ``Finished``
with every vector, in order.

:func:`finish_vector` is what the HTTP layer does with a pooled vector: keep the first
``dimensions`` values (Matryoshka models) and scale to unit length.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence

from inference.backends.base import LoadedModel
from inference.engine.job import Failed, Finished, Job
from inference.failures import FailureKind

STEP_TOKENS = 4096  # tokens one step computes at most (one input longer than that goes alone)
STEP_INPUTS = 64  # and inputs
SHARED_STEP_SECONDS = 0.05  # how long a step may take while other models stream
TOO_LONG = "the input length exceeds the context length"


def _ns(seconds: float) -> int:
    return int(seconds * 1e9)


class EmbedWork:
    """An ``embed`` job's state between steps."""

    def __init__(self, job: Job, model: LoadedModel) -> None:
        self.job = job
        self.model = model
        self.tokens: list[list[int]] = []
        self.vectors: list[list[float]] = []
        self._start = time.perf_counter()
        self._seconds_per_token = 0.0  # of the batches so far (padded tokens), 0 before the first

    def prepare(self) -> bool:
        """Tokenize and check every input; False when the job ended here."""
        request = self.job.request
        window = self.model.info.context_length
        vocab = self.model.info.extra.get("vocab_size")
        for i, text in enumerate(request.inputs):
            tokens = self.model.tokenize(text) if isinstance(text, str) else list(text)
            if isinstance(vocab, int) and any(not 0 <= t < vocab for t in tokens):
                message = f"input {i} holds token ids outside this model's vocabulary of {vocab}"
                return self._fail(message, FailureKind.INVALID_REQUEST)
            if len(tokens) > window > 0:
                if request.truncate == "off":
                    message = f"{TOO_LONG} (input {i}: {len(tokens)} tokens > {window})"
                    return self._fail(message, FailureKind.INVALID_REQUEST)
                tokens = tokens[:window]
            self.tokens.append(tokens)
        self.job.report.prompt_tokens = sum(map(len, self.tokens))
        if not self.tokens:
            return self._done()
        return True

    def step(self, shared: bool = False) -> bool:
        """Compute the next batch of inputs; False once the job is over (done, gone or failed).
        ``shared``: other models are streaming, so the batch is kept short."""
        if self.job.cancelled:
            self.job.report.outcome = "cancelled"
            return False
        start = len(self.vectors)
        end = self._batch_end(start, shared)
        batch = self.tokens[start:end]
        self.job.report.decode_steps += 1
        began = time.perf_counter()
        try:
            vectors = self.model.embed(batch)
        except Exception as error:  # a backend failure ends this request only
            return self._fail(f"computing embeddings failed: {error}", FailureKind.INTERNAL)
        padded = len(batch) * max(map(len, batch), default=1)
        self._seconds_per_token = (time.perf_counter() - began) / max(padded, 1)
        self.vectors.extend(vectors)
        if len(self.vectors) < len(self.tokens):
            return True
        return self._done()

    def _batch_end(self, start: int, shared: bool) -> int:
        """Where the batch from ``start`` ends: within the token and input caps, and while
        ``shared`` within :data:`SHARED_STEP_SECONDS` at the last batch's pace."""
        tokens = STEP_TOKENS
        if shared and self._seconds_per_token > 0:
            tokens = min(tokens, int(SHARED_STEP_SECONDS / self._seconds_per_token))
        end, widest = start, 0
        while end < len(self.tokens) and end - start < STEP_INPUTS:
            widest = max(widest, len(self.tokens[end]))
            if (end - start + 1) * widest > tokens and end > start:
                break
            end += 1
        return end

    def _done(self) -> bool:
        now = time.perf_counter()
        job = self.job
        job.report.outcome = "done"
        job.report.done_reason = "stop"
        job.emit(
            Finished(
                done_reason="stop",
                total_duration=_ns(now - job.submitted),
                load_duration=_ns(self._start - job.submitted),
                prompt_eval_count=job.report.prompt_tokens,
                prompt_eval_duration=_ns(now - self._start),
                vectors=self.vectors,
            )
        )
        return False

    def _fail(self, message: str, kind: FailureKind) -> bool:
        self.job.report.outcome = "failed"
        self.job.emit(Failed(message, kind))
        return False


def finish_vector(vector: Sequence[float], dimensions: int | None = None) -> list[float]:
    """``vector``'s first ``dimensions`` values (all without), scaled to unit length."""
    kept = list(vector[:dimensions] if dimensions else vector)
    norm = math.sqrt(sum(v * v for v in kept))
    return [v / norm for v in kept] if norm > 0 else kept
