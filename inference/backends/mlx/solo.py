"""One MLX sequence decoding alone, on a plain KV cache, as fast as ``mlx_lm.generate_step``.

mlx-lm's ``BatchGenerator`` pays for batching on every step (a batched KV cache with padding
and masks, per-row bookkeeping): about a fifth of a tiny model's speed on this CPU, even with
one sequence in the batch. A local server mostly serves one client at a time, so
:class:`~inference.backends.mlx.batch.MlxBatch` runs a lone sequence here and moves it into the batch
generator when a second one arrives (and back when it is alone again).

The loop is ``generate_step``'s: each step queues the forward pass of the token it is about to
return before waiting for that token, so the model computes while Python hands the token on.
The moves between the two paths lose nothing:

* into the batch (:meth:`SoloSequence.hand_over`): no further forward pass is queued; the token
  already sampled is returned, and the batch generator starts from it with this cache;
* out of the batch (:func:`take_back`): the batch generator has already fed the last
  token it returned and sampled the next; the cache is trimmed by that one token, the sampler's
  draw is undone, and the token is fed again here, so a seeded sequence samples what it would
  have sampled alone.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass
class HandOver:
    """What the batch generator needs to go on with a sequence: its cache, the tokens that
    cache holds, and the tokens still to feed (the rest of the prompt, or the last token)."""

    cache: list[Any]
    fed: list[int]
    rest: list[int]


class SoloSequence:
    """A single sequence's prefill and pipelined decoding; see the module docstring."""

    def __init__(
        self,
        model: Any,
        state: HandOver,
        *,
        sampler: Callable[[Any], Any],
        processors: list[Any],
        prefill_chunk: int,
    ) -> None:
        import mlx.core as mx
        from mlx_lm.generate import generation_stream
        from mlx_lm.models.cache import make_prompt_cache

        self._model = model
        self._stream = generation_stream
        self.cache = state.cache if state.fed else make_prompt_cache(model)
        self.fed = list(state.fed)  # the tokens the cache holds (once queued work is done)
        self._rest = list(state.rest)  # prompt tokens not fed yet (the last one starts decoding)
        self._sampler = sampler
        self._processors = processors
        self._context = mx.array(self.fed, dtype=mx.uint32) if processors else None
        self._chunk = max(prefill_chunk, 1)
        self._pending: tuple[Any, Any] | None = None  # sampled token (lazy) and its logprobs
        self._steps = 0

    def step(self) -> tuple[int, Any] | None:
        """One prompt chunk (``None``) or the next token and its log probabilities."""
        import mlx.core as mx

        with mx.stream(self._stream):
            if len(self._rest) > 1:
                chunk = self._rest[: min(self._chunk, len(self._rest) - 1)]
                self._rest = self._rest[len(chunk) :]
                self._feed(mx.array(chunk, dtype=mx.uint32), chunk)
                mx.eval([layer.state for layer in self.cache])
                return None
            if self._pending is None:
                self._pending = self._forward(mx.array(self._rest, dtype=mx.uint32), self._rest)
                self._rest = []
            token, logprobs = self._pending
            self._pending = self._forward(token, None)
            value = int(token.item())
            self.fed.append(value)  # its forward pass is queued: the cache will hold it
            self._steps += 1
            if self._steps % 256 == 0:
                mx.clear_cache()
            return value, logprobs

    def hand_over(self) -> tuple[tuple[int, Any] | None, HandOver]:
        """Stop decoding here: the token already sampled (if any) and the state to go on with."""
        import mlx.core as mx

        if self._pending is None:
            return None, HandOver(self.cache, self.fed, self._rest)
        token, logprobs = self._pending
        self._pending = None
        with mx.stream(self._stream):
            value = int(token.item())
        return (value, logprobs), HandOver(self.cache, self.fed, [value])

    def _forward(self, inputs: Any, known: list[int] | None) -> tuple[Any, Any]:
        """Queue the forward pass of ``inputs`` and the sampling of the next token."""
        import mlx.core as mx

        logits = self._feed(inputs.reshape(-1), known)[:, -1, :]
        for processor in self._processors:
            logits = processor(self._context, logits)
        logprobs = logits - mx.logsumexp(logits, keepdims=True)
        sampled = self._sampler(logprobs)
        mx.async_eval(sampled, logprobs)  # type: ignore[no-untyped-call]
        return sampled, logprobs.squeeze(0)

    def _feed(self, inputs: Any, known: list[int] | None) -> Any:
        """The model over ``inputs`` (a 1-D token array; ``known``: its values, when known
        already), extending the cache, ``fed`` and the processors' token history."""
        import mlx.core as mx

        logits = self._model(inputs[None], cache=self.cache)
        if known is not None:
            self.fed.extend(known)
        if self._context is not None:
            self._context = mx.concatenate([self._context, inputs.astype(mx.uint32)])
        return logits


def take_back(cache: list[Any], tokens: list[int], sampler: Callable[[Any], Any]) -> HandOver:
    """The state of a sequence taken out of the batch generator (its cache must be trimmable).

    ``cache`` holds ``tokens``; the batch generator fed the last of them and sampled the next.
    The cache forgets that last token and the sampler its draw, so the token is fed again.
    """
    from mlx_lm.models.cache import trim_prompt_cache

    trim_prompt_cache(cache, 1)
    rewind = getattr(sampler, "rewind", None)
    if rewind is not None:
        rewind()
    return HandOver(cache, tokens[:-1], tokens[-1:])
