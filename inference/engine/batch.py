"""Decode batches: several sequences of one model advancing together, one step at a time.

The engine drives a :class:`DecodeBatch` on the worker thread. Sequences join with
:meth:`~DecodeBatch.add` and leave with :meth:`~DecodeBatch.remove` between steps; each
:meth:`~DecodeBatch.step` advances every decoding sequence by one token and every sequence still
reading its prompt by one prefill chunk, so a long prompt never freezes the other streams.

A backend with real batched kernels (MLX) implements the protocol itself. :class:`GeneratorBatch`
gives any backend that only has the one-sequence :meth:`LoadedModel.generate` the same interface
by stepping each sequence's generator in turn: the same scheduling, no shared forward pass.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from inference.backends.base import GenerationCancelled, SamplingParams, Step

if TYPE_CHECKING:
    from validation.constraint import TokenConstraint


@dataclass(frozen=True)
class Admission:
    """One sequence joining a batch."""

    key: int
    prompt: Sequence[int]
    params: SamplingParams
    should_stop: Callable[[], bool]
    constraint: TokenConstraint | None = None
    # A vision model's images for this prompt, as its ``tokenize_with_images`` prepared them
    # (encoded by the batch, as the first step of the sequence's prefill).
    media: object = None


# The least prompt tokens a step takes while others decode, so a long prompt always moves on.
MIN_INTERLEAVED_CHUNK = 4


def interleaved_chunk(
    prompt_seconds: float, prompt_tokens: int, decode_seconds: float, decode_steps: int, *, default: int
) -> int:
    """Prompt tokens to prefill in a step beside decoding sequences: as many as one decode step
    costs, from the batch's own timings (``default`` until it has measured enough).

    A step with prefill then takes about twice a plain one on any machine: where prefill is cheap
    (Metal, llama.cpp) the chunks are large, on MLX's CPU backend they are small.
    """
    if prompt_tokens < 64 or decode_steps < 8:
        return default
    per_token = prompt_seconds / prompt_tokens
    per_step = decode_seconds / decode_steps
    return max(MIN_INTERLEAVED_CHUNK, int(per_step / max(per_token, 1e-9)))


class ChunkSizer:
    """Prompt tokens to prefill in a step beside decoding sequences, steered by the steps' own
    durations: a step that reads a chunk should take at most ``slowdown`` times a plain decode
    step (0.8 to 1 of that bound).

    Where a prefill chunk is a forward pass of its own (MLX), much of its cost is fixed (reading
    the weights; attending to the prompt read so far) and grows little with its length, so a rate
    per prompt token averaged over past chunks says little about the next one. Instead the chunk
    grows while steps with a chunk stay under the bound and shrinks in proportion when one goes
    over: a long prompt beside the streams is read as fast as that bound on their gaps allows.

    Larger chunks cost the streams less in all (they are slowed for a shorter time), so the
    bound is the most the streams' gaps may grow: 3, the limit the batching benchmark holds their
    p99 gap to against their median. Measured on a ~50M model beside four streams, a 1,679-token
    prompt took 24 s to read at 2.5, 12.7 s at 3 and 8 s at 4; its steps' own floor was about 2.3
    plain steps.
    """

    def __init__(self, start: int, *, slowdown: float = 3.0, smoothing: float = 0.2) -> None:
        self.chunk = max(start, MIN_INTERLEAVED_CHUNK)
        self._slowdown = slowdown
        self._smoothing = smoothing
        self._plain: float | None = None  # a plain decode step, seconds (moving average)

    def plain_step(self, seconds: float) -> None:
        """A step that only decoded took ``seconds``."""
        if self._plain is None:
            self._plain = seconds
        else:
            self._plain += self._smoothing * (seconds - self._plain)

    def chunk_step(self, seconds: float, limit: int) -> None:
        """A step that also read a chunk of ``self.chunk`` tokens took ``seconds``; ``limit``
        caps the chunk (the request's own prefill size)."""
        if self._plain is None:
            return
        ratio = seconds / (self._slowdown * self._plain)
        if ratio > 1:
            self.chunk = int(self.chunk / ratio)
        elif ratio < 0.8:
            self.chunk = int(self.chunk * 1.5) + 1
        self.chunk = max(MIN_INTERLEAVED_CHUNK, min(self.chunk, limit))


def streams_come_first(decoding: int, reading: int) -> bool:
    """Whether prompts are read in small chunks beside the decoding sequences this step.

    Small chunks keep the streams moving but cost more in all (each chunk is a forward pass of
    its own), so they pay only while the streams are at least as many as the sequences waiting
    for their first token. A burst of new clients beside one stream reads its prompts in full:
    the stream pauses once, and every newcomer starts sooner.
    """
    return decoding > 0 and decoding >= reading


# A token; ``None`` when the sequence ended without one; or the error that ended it.
StepResult = Step | BaseException | None


class DecodeBatch(Protocol):
    """Sequences of one loaded model decoding together; every method runs on the worker thread."""

    def add(self, admission: Admission) -> int:
        """Start a sequence; returns how many leading prompt tokens came from the prefix cache."""
        ...

    def remove(self, key: int) -> None:
        """Drop a sequence (finished or cancelled); unknown keys are ignored."""
        ...

    def step(self) -> list[tuple[int, StepResult]]:
        """Advance every sequence once; a token (or that sequence's own error) per sequence that
        produced one. Raising means the shared step failed and every sequence is lost."""
        ...

    def __len__(self) -> int: ...

    def close(self) -> None:
        """Drop every sequence and whatever the batch caches."""
        ...


# ``generate(admission)``: prefill ``admission.prompt`` chunk by chunk, yielding ``None`` after each
# chunk but the last (so a long prompt takes one chunk per batch step) and raising
# GenerationCancelled when ``admission.should_stop()`` turns true between chunks; then yield one
# Step per sampled token: only tokens ``admission.constraint`` allows, the last one marked ``eos``.
GenerateFn = Callable[[Admission], Generator[Step | None, None, None]]


class GeneratorBatch:
    """A :class:`DecodeBatch` over one-sequence generators, stepped round-robin."""

    def __init__(self, generate: GenerateFn) -> None:
        self._generate = generate
        self._members: dict[int, Generator[Step | None, None, None]] = {}

    def add(self, admission: Admission) -> int:
        self._members[admission.key] = self._generate(admission)
        return 0

    def remove(self, key: int) -> None:
        steps = self._members.pop(key, None)
        if steps is not None:
            steps.close()

    def step(self) -> list[tuple[int, StepResult]]:
        results: list[tuple[int, StepResult]] = []
        for key, steps in list(self._members.items()):
            try:
                step = next(steps)
                if step is not None:  # None: a prefill chunk was read, no token yet
                    results.append((key, step))
            except StopIteration:
                results.append((key, None))
                self._members.pop(key, None)
            except GenerationCancelled as cancelled:
                results.append((key, cancelled))
                self._members.pop(key, None)
            except Exception as error:  # one sequence's failure is that sequence's alone
                results.append((key, error))
                self._members.pop(key, None)
        return results

    def __len__(self) -> int:
        return len(self._members)

    def close(self) -> None:
        for key in list(self._members):
            self.remove(key)
