"""Continuous batching and prefix caching for MLX models, on mlx-lm's ``BatchGenerator``.

:class:`MlxBatch` is the MLX :class:`~inference.engine.batch.DecodeBatch`. Every step decodes one token
for all decoding sequences in one forward pass and feeds the sequences still reading their prompt
one prefill chunk. While anything is decoding, the chunk is sized from the steps' own durations
(:class:`~inference.engine.batch.ChunkSizer`; it starts at ``interleave_chunk`` tokens) so that a step
with a chunk takes at most three plain ones: another client's long prompt slows the streams
instead of freezing them, and is itself read as fast as that allows. When the sequences reading
their prompts outnumber the decoding ones (a burst of new clients), or nothing decodes, the
prompts go in full ``prefill_chunk`` steps: small chunks would hold the many back for the sake
of the few.

A sequence alone does not go through the batch generator: :mod:`inference.backends.mlx.solo` decodes it
on a plain KV cache (mlx-lm's batch machinery costs about 15 % of a small model's speed even for
one sequence), hands it to the batch generator when a second sequence arrives, and takes it back
when it is alone again.

Each sequence keeps its own sampler (with its own random key when it has a seed, so a seeded
request gives the same text alone or in a batch), its own logits processors (penalties, and the
grammar mask of structured output) and its own detokenizer.

:class:`PrefixCache` keeps the KV cache of sequences that left the batch, keyed by their tokens
(mlx-lm's ``LRUPromptCache``: least recently used first out, bounded in entries and bytes). A new
sequence starts from the longest cached prefix of its prompt, so a chat's next turn prefills only
the new messages.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

from inference.backends.base import SamplingParams, Step, TokenLogprob
from inference.backends.mlx.solo import HandOver, SoloSequence, take_back
from inference.engine.batch import Admission, ChunkSizer, StepResult, streams_come_first

# Generous enough never to end a sequence: the engine applies num_predict and the context window.
_NO_LIMIT = 1 << 30


class PrefixCache:
    """KV caches of finished sequences for one model, looked up by longest common prefix."""

    def __init__(self, entries: int, max_bytes: int) -> None:
        from mlx_lm.models.cache import LRUPromptCache

        self._lru = LRUPromptCache(max_size=max(entries, 1), max_bytes=max_bytes)

    def __len__(self) -> int:
        return len(self._lru)

    @property
    def nbytes(self) -> int:
        return int(self._lru.nbytes)

    def store(self, tokens: list[int], cache: list[Any]) -> None:
        import mlx.core as mx

        if tokens:
            # Materialise the extracted slices now, so the batch's whole buffers are not kept alive.
            mx.eval([layer.state for layer in cache])
            self._lru.insert_cache("model", list(tokens), cache)

    def fetch(self, prompt: list[int]) -> tuple[list[Any] | None, int]:
        """A private copy of the best cache for ``prompt`` and how many tokens it covers.

        At least the prompt's last token is always left to compute: its logits start decoding.
        """
        from mlx_lm.models.cache import can_trim_prompt_cache, trim_prompt_cache

        cache, rest = self._lru.fetch_nearest_cache("model", list(prompt))
        if cache is not None and not rest:
            if can_trim_prompt_cache(cache):
                trim_prompt_cache(cache, 1)
                rest = prompt[-1:]
            else:
                cache = None
        if cache is None:
            return None, 0
        return cache, len(prompt) - len(rest)


@dataclass
class _Member:
    uid: int  # the batch generator's id; -1 while the sequence runs alone
    detokenizer: Any
    logprobs: int
    sampler: Any
    processors: list[Any]
    decoding: bool = False
    # Whether the batch generator has returned a token for it since it went in: only then does
    # its cache hold every token but the next (what taking it out again relies on).
    generating: bool = False


class MlxBatch:
    """Sequences of one MLX model decoding together; see the module docstring."""

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        eos: set[int],
        *,
        make_sampler: Callable[[SamplingParams], Any],
        make_processors: Callable[[SamplingParams, Any], list[Any]],
        prefix_cache: PrefixCache | None,
        interleave_chunk: int = 32,
    ) -> None:
        from mlx_lm.generate import BatchGenerator
        from mlx_lm.models.cache import can_trim_prompt_cache, make_prompt_cache

        self._model = model
        self._tokenizer = tokenizer
        self._eos = eos
        self._make_sampler = make_sampler
        self._make_processors = make_processors
        self._prefix_cache = prefix_cache
        self._sizer = ChunkSizer(interleave_chunk)
        self._prefill_chunk = 512
        # The engine bounds the batch (TRILLM_NUM_PARALLEL); mlx-lm's own bounds stay out of the way.
        self._generator = BatchGenerator(
            model, max_tokens=_NO_LIMIT, completion_batch_size=1024, prefill_batch_size=1024
        )
        self._members: dict[int, _Member] = {}
        self._keys: dict[int, int] = {}  # mlx-lm uid -> engine key
        # The one sequence running alone (engine key and state), outside the batch generator.
        self._solo: tuple[int, SoloSequence] | None = None
        # A sequence leaves the batch generator by trimming its cache by one token: not possible
        # with rotating (sliding-window) caches, whose sequences stay in the batch.
        self._resumable = can_trim_prompt_cache(make_prompt_cache(model))

    def add(self, admission: Admission, *, cached: int | None = None) -> int:
        """Start a sequence from the longest cached prefix of its prompt; with ``cached``, from
        exactly that many cached tokens (a distributed group's followers take the leader's)."""
        prompt = list(admission.prompt)
        cache, found = self._cached_prefix(prompt, cached)
        params = admission.params
        self._prefill_chunk = max(params.prefill_chunk, 1)
        sampler = self._make_sampler(params)
        processors = self._make_processors(params, admission.constraint)
        member = _Member(-1, self._tokenizer.detokenizer, params.logprobs, sampler, processors)
        state = HandOver(cache or [], prompt[:found], prompt[found:])
        if self._members:
            self._insert(admission.key, member, state)
        else:
            self._run_alone(admission.key, member, state)
        self._members[admission.key] = member
        return found

    def _cached_prefix(self, prompt: list[int], cached: int | None) -> tuple[list[Any] | None, int]:
        if self._prefix_cache is None or cached == 0:
            return None, 0
        if cached is None:
            return self._prefix_cache.fetch(prompt)
        cache, found = self._prefix_cache.fetch(prompt[: cached + 1])
        if found != cached:
            raise RuntimeError(f"the prefix cache holds {found} of this prompt's tokens, the leader {cached}")
        return cache, found

    def _run_alone(self, key: int, member: _Member, state: HandOver) -> None:
        member.uid = -1
        solo = SoloSequence(
            self._model,
            state,
            sampler=member.sampler,
            processors=member.processors,
            prefill_chunk=self._prefill_chunk,
        )
        self._solo = (key, solo)

    def _insert(self, key: int, member: _Member, state: HandOver) -> None:
        """Put a sequence into the batch generator, from its cache and the tokens still to feed."""
        (uid,) = self._generator.insert(
            [state.rest],
            caches=[state.cache] if state.fed else None,
            all_tokens=[state.fed],
            samplers=[member.sampler],
            logits_processors=[member.processors],
        )
        member.uid = uid
        member.generating = False
        self._keys[uid] = key

    def remove(self, key: int) -> None:
        member = self._members.pop(key, None)
        if member is None:
            return
        if self._solo is not None and self._solo[0] == key:
            solo = self._solo[1]
            self._solo = None
            if self._prefix_cache is not None:
                self._prefix_cache.store(solo.fed, solo.cache)
            return
        del self._keys[member.uid]
        keep = self._prefix_cache is not None
        caches = self._generator.remove([member.uid], return_prompt_caches=keep)  # type: ignore[no-untyped-call]
        if keep and member.uid in caches:
            cache, tokens = caches[member.uid]
            assert self._prefix_cache is not None
            self._prefix_cache.store(list(tokens), cache)

    def prefill_step(self) -> int:
        """The prompt tokens a batched step reads for each sequence still reading its prompt."""
        decoding = sum(1 for m in self._members.values() if m.decoding)
        if streams_come_first(decoding, len(self._members) - decoding):
            return min(self._sizer.chunk, self._prefill_chunk)
        return self._prefill_chunk

    def step(self, prefill_step: int | None = None) -> list[tuple[int, StepResult]]:
        """Advance every sequence once; ``prefill_step`` replaces :meth:`prefill_step`'s choice
        (a distributed group's followers take the leader's)."""
        if self._solo is not None:
            key, solo = self._solo
            if len(self._members) > 1:
                return self._hand_over(key, solo)
            started = time.perf_counter()
            taken = solo.step()
            if taken is None:  # a chunk of its prompt
                return []
            self._sizer.plain_step(time.perf_counter() - started)
            return [(key, self._token(key, *taken))]
        if len(self._members) == 1:
            self._take_out()
            if self._solo is not None:
                return self.step(prefill_step)
        decoding = sum(1 for m in self._members.values() if m.decoding)
        reading = len(self._members) - decoding
        interleaved = streams_come_first(decoding, reading)
        self._generator.prefill_step_size = self.prefill_step() if prefill_step is None else prefill_step
        started = time.perf_counter()
        _, responses = self._generator.next()  # type: ignore[no-untyped-call]
        took = time.perf_counter() - started
        if decoding and not reading:
            self._sizer.plain_step(took)
        elif interleaved:
            self._sizer.chunk_step(took, self._prefill_chunk)
        results: list[tuple[int, StepResult]] = []
        for response in responses:
            owner = self._keys.get(response.uid)
            if owner is not None:
                self._members[owner].generating = True
                results.append((owner, self._token(owner, int(response.token), response.logprobs)))
        return results

    def _hand_over(self, key: int, solo: SoloSequence) -> list[tuple[int, StepResult]]:
        """A second sequence arrived: the lone one goes on in the batch generator."""
        self._solo = None
        taken, state = solo.hand_over()
        self._insert(key, self._members[key], state)
        return [] if taken is None else [(key, self._token(key, *taken))]

    def _take_out(self) -> None:
        """The batch is down to one decoding sequence: take it out to run alone, if it can be."""
        ((key, member),) = self._members.items()
        if not member.generating or not self._resumable:
            return
        caches = self._generator.remove([member.uid], return_prompt_caches=True)  # type: ignore[no-untyped-call]
        del self._keys[member.uid]
        cache, tokens = caches[member.uid]
        self._run_alone(key, member, take_back(cache, list(tokens), member.sampler))

    def _token(self, key: int, token: int, logprobs: Any) -> Step:
        member = self._members[key]
        member.decoding = True
        return token_step(self._tokenizer, self._eos, member.detokenizer, token, logprobs, member.logprobs)

    def __len__(self) -> int:
        return len(self._members)

    def close(self) -> None:
        for key in list(self._members):
            self.remove(key)
        self._generator.close()  # type: ignore[no-untyped-call]


def token_step(tokenizer: Any, eos: set[int], detokenizer: Any, token: int, logprobs: Any, top: int) -> Step:
    """A sampled ``token`` as a step: its text from the sequence's streaming ``detokenizer``, and
    its log probability (with the ``top`` most likely tokens) when asked (``top`` >= 0)."""
    scored = _score(tokenizer, token, logprobs, top) if top >= 0 else None
    if token in eos:
        detokenizer.finalize()
        return Step(token, detokenizer.last_segment, eos=True, logprob=scored)
    detokenizer.add_token(token)
    return Step(token, detokenizer.last_segment, logprob=scored)


def _score(tokenizer: Any, token: int, logprobs: Any, top: int) -> TokenLogprob:
    """The sampled token's log probability and, when asked, the ``top`` most likely tokens."""
    import mlx.core as mx

    logprobs = logprobs.reshape(-1)
    best: tuple[tuple[str, float], ...] = ()
    if top > 0:
        ids = cast(list[int], mx.argsort(-logprobs)[:top].tolist())
        values = cast(list[float], logprobs[mx.array(ids)].tolist())
        best = tuple((tokenizer.decode([i]), float(v)) for i, v in zip(ids, values, strict=True))
    return TokenLogprob(tokenizer.decode([token]), float(logprobs[token].item()), best)


def make_sampler(params: SamplingParams, vocab: int) -> Callable[[Any], Any]:
    """A sampler for one sequence, with Ollama's settings mapped onto mlx-lm's filters.

    Greedy requests share mlx-lm's ``greedy_sampler`` (a batch of them samples in one call). With
    a seed, the sequence draws from its own key, so other sequences in the batch cannot change
    what it samples.
    """
    from mlx_lm.sample_utils import apply_min_p, apply_top_k, apply_top_p, greedy_sampler

    if params.temperature <= 0:
        return greedy_sampler
    filters: list[Callable[[Any], Any]] = []
    if 0 < params.top_p < 1:
        filters.append(lambda x: apply_top_p(x, params.top_p))
    if params.min_p > 0:
        filters.append(lambda x: apply_min_p(x, params.min_p))
    # mlx-lm rejects top_k >= vocabulary; Ollama treats such a k as "keep everything".
    if 0 < params.top_k < vocab:
        filters.append(lambda x: apply_top_k(x, params.top_k))
    return _Sampler(filters, 1 / params.temperature, params.seed)


class _Sampler:
    """Filters, temperature and a categorical draw; seeded, from the sequence's own key.

    :meth:`rewind` undoes the last draw's use of the key: a sequence moved out of the batch
    generator is sampled again from the token the batch had already sampled past.
    """

    def __init__(self, filters: list[Callable[[Any], Any]], scale: float, seed: int | None) -> None:
        import mlx.core as mx

        self._filters = filters
        self._scale = scale
        self._key = None if seed is None else mx.random.key(seed)
        self._previous = self._key

    def __call__(self, logprobs: Any) -> Any:
        import mlx.core as mx

        for keep in self._filters:
            logprobs = keep(logprobs)
        if self._key is None:
            return mx.random.categorical(logprobs * self._scale)
        self._previous = self._key
        self._key, draw = mx.random.split(self._key)
        return mx.random.categorical(logprobs * self._scale, key=draw)

    def rewind(self) -> None:
        self._key = self._previous


def make_processors(params: SamplingParams, mask: Callable[[Any, Any], Any] | None) -> list[Any]:
    """mlx-lm logits processors for Ollama's penalties, then the grammar ``mask`` (last, so
    nothing un-masks a token)."""
    from mlx_lm.sample_utils import make_logits_processors

    processors: list[Any] = make_logits_processors(
        repetition_penalty=params.repeat_penalty if params.repeat_penalty != 1.0 else None,
        repetition_context_size=params.repeat_last_n,
        presence_penalty=params.presence_penalty or None,
        presence_context_size=params.repeat_last_n,
        frequency_penalty=params.frequency_penalty or None,
        frequency_context_size=params.repeat_last_n,
    )
    if mask is not None:
        processors.append(mask)
    return processors
