"""Continuous batching on llama.cpp: several sequences of one GGUF model in one context.

:class:`LlamaCppBatch` is the llama.cpp :class:`~inference.engine.batch.DecodeBatch`. The model's context
holds ``parallel`` sequence slots over one unified KV cache of ``parallel`` windows. Every step is one
``llama_decode`` of one ``llama_batch`` that carries the last sampled token of each decoding sequence
and the next prompt chunk of each sequence still reading its prompt, so the weights are read once a
step for all of them (on a CPU, decoding is bound by reading the weights, and this is where batching
pays). While anything decodes, the prompt chunks of a step cost about one decode step (measured), so
a long prompt slows the streams beside it instead of freezing them; with nothing decoding the prompt
goes in ``num_batch`` chunks.

A slot keeps its KV cache when its sequence ends. A new sequence takes the free slot whose cache
shares the longest prefix with its prompt, and when another slot (busy or not) shares a longer one,
those cells are shared into its slot (``llama_memory_seq_cp``: no copy in a unified cache). A chat's
next turn computes only its new messages, and concurrent requests with one system prompt compute
that prompt once.

Each sequence keeps llama.cpp's own sampler chain (penalties, top-k, top-p, min-p, temperature,
seeded distribution: the order llama.cpp's server uses) and samples from its own row of the step's
logits; a grammar constraint masks that row in place before the chain runs.
"""

from __future__ import annotations

import codecs
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from inference.backends.base import GenerationCancelled, SamplingParams, Step, TokenLogprob
from inference.backends.llamacpp.vision import ImagePrompt
from inference.engine.batch import Admission, StepResult, interleaved_chunk

if TYPE_CHECKING:
    from inference.backends.llamacpp.backend import LlamaCppModel
    from validation.constraint import TokenConstraint

_DEFAULT_SEED = 0xFFFFFFFF  # llama.cpp: draw a random seed
# A new prompt waits a step for another one computing its prefix when that spares this many tokens.
_WORTH_WAITING = 32


@dataclass(eq=False)
class _Slot:
    """One sequence id of the context and the tokens its KV cache holds."""

    seq: int
    tokens: list[int] = field(default_factory=list)
    member: _Member | None = field(default=None, repr=False)
    last_used: float = 0.0


@dataclass(eq=False)
class _Member:
    """A sequence decoding in a slot."""

    key: int
    slot: _Slot
    prompt: list[int]
    pending: int  # index of the next prompt token to prefill
    params: SamplingParams
    should_stop: Callable[[], bool]
    sampler: Any
    constraint: TokenConstraint | None
    decoder: codecs.IncrementalDecoder
    last: int | None = None  # the sampled token not yet evaluated
    fresh: bool = True  # no prompt chunk of its own planned yet
    waiting_for: _Slot | None = field(default=None, repr=False)  # to share a prefix from
    # A prompt with images: its chunks, evaluated one a step by the projector (``media.projected``
    # of them); ``chunk``: the next.
    media: ImagePrompt | None = field(default=None, repr=False)
    chunk: int = 0


def _shared(a: list[int], b: list[int]) -> int:
    """The length of the common prefix of ``a`` and ``b``."""
    n = 0
    for mine, theirs in zip(a, b, strict=False):
        if mine != theirs:
            break
        n += 1
    return n


class LlamaCppBatch:
    """A :class:`~inference.engine.batch.DecodeBatch` over the slots of one llama.cpp context."""

    def __init__(self, model: LlamaCppModel, interleave_chunk: int = 32) -> None:
        import llama_cpp
        from llama_cpp._internals import LlamaBatch

        self._lib = llama_cpp
        self._model = model
        self._context = model.context
        # A fresh batch (also after a failed step) starts from an empty cache.
        self._context.kv_cache_clear()  # type: ignore[no-untyped-call]
        self._slots = [_Slot(seq) for seq in range(model.max_sequences)]
        self._members: dict[int, _Member] = {}
        self._capacity = model.batch_tokens
        self._batch = LlamaBatch(n_tokens=self._capacity, embd=0, n_seq_max=1, verbose=False)
        self._interleave_chunk = interleave_chunk
        # Seconds spent on prompt tokens and on decode steps, for the prefill chunk beside decoding.
        self._prompt_seconds = 0.0
        self._prompt_tokens = 0
        self._decode_seconds = 0.0
        self._decode_steps = 0
        self.prompt_tokens_computed = 0  # statistics: prompt tokens decoded, and shared from a slot
        self.shared_tokens = 0

    def add(self, admission: Admission) -> int:
        prompt = list(admission.prompt)
        window = self._model.info.context_length
        if len(prompt) >= window:
            raise ValueError(f"the prompt ({len(prompt)} tokens) does not fit the context of {window}")
        free = [slot for slot in self._slots if slot.member is None]
        if not free:
            raise RuntimeError("every sequence slot of this llama.cpp context is busy")
        media = admission.media if isinstance(admission.media, ImagePrompt) else None
        if media is not None:
            for span in media.spans:  # an image's positions match no other prompt's tokens
                if span.image:
                    prompt[span.start : span.end] = [-1] * (span.end - span.start)
        # At least one prompt token is computed, for the first token's logits. A prompt with
        # images is computed whole (the projector evaluates whole chunks).
        usable = prompt[:-1] if self._model.reuse_prefixes and media is None else []
        shares = [_shared(usable, s.tokens) for s in self._slots]  # indexed by sequence id
        slot = max(free, key=lambda s: (shares[s.seq], -s.last_used))
        reused = shares[slot.seq]
        if not self._context.kv_cache_seq_rm(slot.seq, reused, -1):
            # Some caches (recurrent, sliding-window) cannot drop a tail: start the slot afresh.
            self._context.kv_cache_seq_rm(slot.seq, 0, -1)
            reused = 0
        slot.tokens = prompt[:reused]
        others = [s for s in self._slots if s is not slot]
        donor = max(others, key=lambda s: shares[s.seq], default=slot)
        reused = self._share(donor, slot, usable, reused)
        member = _Member(
            key=admission.key,
            slot=slot,
            prompt=prompt,
            pending=reused,
            params=admission.params,
            should_stop=admission.should_stop,
            sampler=self._sampler(admission.params, prompt),
            constraint=admission.constraint,
            decoder=codecs.getincrementaldecoder("utf-8")(errors="replace"),
            media=media,
        )
        slot.member = member
        slot.last_used = time.monotonic()
        self._members[admission.key] = member
        return reused

    def _share(self, donor: _Slot, slot: _Slot, usable: list[int], held: int) -> int:
        """Share into ``slot`` (which holds ``usable[:held]``) the cells of the longer prefix of
        ``usable`` that ``donor`` holds, if any; how many tokens ``slot`` holds then."""
        shared = _shared(usable, donor.tokens)
        if donor is slot or shared <= held:
            return held
        self._context.kv_cache_seq_cp(donor.seq, slot.seq, held, shared)
        slot.tokens = usable[:shared]
        self.shared_tokens += shared - held
        return shared

    def _sampler(self, params: SamplingParams, prompt: list[int]) -> Any:
        from llama_cpp._internals import LlamaSampler

        model = self._model
        sampler = LlamaSampler()  # type: ignore[no-untyped-call]
        window = params.repeat_last_n if params.repeat_last_n >= 0 else model.info.context_length
        penalised = (
            params.repeat_penalty != 1.0 or params.frequency_penalty != 0.0 or params.presence_penalty != 0.0
        )
        if window > 0 and penalised:
            sampler.add_penalties(
                model.n_vocab,
                window,
                params.repeat_penalty,
                params.frequency_penalty,
                params.presence_penalty,
            )
        if params.temperature <= 0:
            sampler.add_greedy()  # type: ignore[no-untyped-call]
        else:
            if params.top_k > 0:
                sampler.add_top_k(params.top_k)
            if params.top_p < 1.0:
                sampler.add_top_p(params.top_p, 1)
            if params.min_p > 0.0:
                sampler.add_min_p(params.min_p, 1)
            sampler.add_temp(params.temperature)
            sampler.add_dist(_DEFAULT_SEED if params.seed is None else params.seed & 0xFFFFFFFF)
        if window > 0 and penalised:
            for token in prompt[-window:]:  # the prompt counts towards repetition, as in llama.cpp
                if token >= 0:  # (not an image's positions)
                    sampler.accept(token)
        return sampler

    def remove(self, key: int) -> None:
        member = self._members.pop(key, None)
        if member is not None:
            if member.media is not None:
                member.media.close()
            member.sampler.close()
            member.slot.member = None
            member.slot.last_used = time.monotonic()

    def step(self) -> list[tuple[int, StepResult]]:
        results: list[tuple[int, StepResult]] = []
        decoding: list[_Member] = []
        reading: list[_Member] = []
        window = self._model.info.context_length
        for member in list(self._members.values()):
            if member.media is not None and member.chunk < member.media.projected:
                results.extend(self._media_step(member))
            elif member.pending < len(member.prompt):
                if member.pending and member.should_stop():
                    results.append((member.key, GenerationCancelled()))
                else:
                    reading.append(member)
            elif member.last is not None:
                if len(member.slot.tokens) >= window:
                    results.append(
                        (member.key, RuntimeError(f"the context window of {window} tokens is full"))
                    )
                else:
                    decoding.append(member)
        # The step's tokens: every decoding sequence's last token, then prompt chunks in arrival order.
        planned = [(m, [m.last], True) for m in decoding if m.last is not None]
        room = self._capacity - len(planned)
        budget = self._prefill_budget() if decoding else room
        reading_planned: list[tuple[_Member, int]] = []  # and where its chunk ends
        for member in reading:
            if room <= 0 or budget <= 0:
                break
            if member.waiting_for is not None:  # the prefix it waited for is in that slot now
                member.pending = self._share(
                    member.waiting_for, member.slot, member.prompt[:-1], member.pending
                )
                member.waiting_for = None
            elif (
                member.fresh
                and self._model.reuse_prefixes
                and (ahead := self._worth_waiting_for(member, reading_planned)) is not None
            ):
                member.waiting_for = ahead.slot  # another prompt computes this one's prefix now
                continue
            member.fresh = False
            take = min(room, budget, max(1, member.params.prefill_chunk), len(member.prompt) - member.pending)
            chunk = member.prompt[member.pending : member.pending + take]
            planned.append((member, chunk, member.pending + take == len(member.prompt)))
            reading_planned.append((member, member.pending + take))
            room -= take
            budget -= take
        if not planned:
            return results
        rows = self._decode(planned, decoded=len(decoding))
        for (member, chunk, sample), row in zip(planned, rows, strict=True):
            member.slot.tokens.extend(chunk)
            if member.pending < len(member.prompt):
                member.pending += len(chunk)
            if sample:
                try:
                    results.append((member.key, self._sample(member, row)))
                except Exception as error:  # this sequence's failure is its own
                    results.append((member.key, error))
        return results

    def _media_step(self, member: _Member) -> list[tuple[int, StepResult]]:
        """One chunk of a prompt with images, through the projector (before the step's shared
        decode, whose logits would replace this one's); a token when it was the prompt's last."""
        media = member.media
        assert media is not None and self._model.projector is not None
        if member.chunk and member.should_stop():
            return [(member.key, GenerationCancelled())]
        last = member.chunk == len(media.spans) - 1
        try:
            self._model.projector.eval_chunk(
                self._context.ctx, media, member.chunk, member.slot.seq, self._capacity, logits=last
            )
        except Exception as error:  # this sequence's failure is its own
            return [(member.key, error)]
        span = media.spans[member.chunk]
        member.chunk += 1
        member.slot.tokens.extend(member.prompt[span.start : span.end])
        member.pending = span.end
        member.fresh = False
        if not last:
            return []
        try:
            return [(member.key, self._sample(member, -1))]
        except Exception as error:
            return [(member.key, error)]

    @staticmethod
    def _worth_waiting_for(member: _Member, planned: list[tuple[_Member, int]]) -> _Member | None:
        """A prompt planned in this step that computes at least :data:`_WORTH_WAITING` more
        tokens of ``member``'s prompt than it holds: concurrent requests with one long system
        prompt compute it once, the later ones a step later."""
        for ahead, end in planned:
            if end - member.pending < _WORTH_WAITING:
                continue
            if _shared(member.prompt[:end], ahead.prompt[:end]) - member.pending >= _WORTH_WAITING:
                return ahead
        return None

    def _decode(self, planned: list[tuple[_Member, list[int], bool]], decoded: int) -> list[int]:
        """One ``llama_decode`` of every planned chunk (the first ``decoded`` are sampled tokens, the
        rest prompt chunks); the batch row of each chunk's last token."""
        batch = self._batch.batch
        n = 0
        rows: list[int] = []
        for member, chunk, sample in planned:
            seq = member.slot.seq
            start = len(member.slot.tokens)
            for offset, token in enumerate(chunk):
                batch.token[n] = token
                batch.pos[n] = start + offset
                batch.n_seq_id[n] = 1
                batch.seq_id[n][0] = seq
                batch.logits[n] = False
                n += 1
            batch.logits[n - 1] = sample
            rows.append(n - 1)
        batch.n_tokens = n
        began = time.perf_counter()
        code = self._lib.llama_decode(self._context.ctx, batch)
        if code != 0:
            raise RuntimeError(f"llama_decode failed with code {code}")
        spent = time.perf_counter() - began
        if decoded == n:
            self._decode_seconds += spent
            self._decode_steps += 1
        elif decoded == 0:
            self._prompt_seconds += spent
            self._prompt_tokens += n
        self.prompt_tokens_computed += n - decoded
        return rows

    def _prefill_budget(self) -> int:
        """Prompt tokens to read beside a decode step: as many as one decode step costs."""
        return interleaved_chunk(
            self._prompt_seconds,
            self._prompt_tokens,
            self._decode_seconds,
            self._decode_steps,
            default=self._interleave_chunk,
        )

    def _sample(self, member: _Member, row: int) -> Step:
        scored: TokenLogprob | None = None
        raw = None
        if member.constraint is not None or member.params.logprobs >= 0:  # else the C side alone
            logits = self._model.logits(row)
            if member.constraint is not None:
                logits[~member.constraint.allowed()] = -np.inf
            raw = logits.copy() if member.params.logprobs >= 0 else None
        token = int(member.sampler.sample(self._context, row))
        if member.constraint is not None:
            member.constraint.consume([token])
        if raw is not None:
            scored = self._score(raw, token, member.params.logprobs)
        member.last = token
        if token in self._model.eog:
            return Step(token, member.decoder.decode(b"", final=True), eos=True, logprob=scored)
        return Step(token, member.decoder.decode(self._model.piece(token)), logprob=scored)

    def _score(self, logits: Any, token: int, top: int) -> TokenLogprob:
        shifted = logits - np.max(logits)
        logprobs = shifted - np.log(np.sum(np.exp(shifted)))
        best: tuple[tuple[str, float], ...] = ()
        if top > 0:
            ids = np.argsort(-logprobs)[:top]
            best = tuple((self._model.text(int(i)), float(logprobs[i])) for i in ids)
        return TokenLogprob(self._model.text(token), float(logprobs[token]), best)

    def __len__(self) -> int:
        return len(self._members)

    def close(self) -> None:
        for key in list(self._members):
            self.remove(key)
        self._batch.close()  # type: ignore[no-untyped-call]
