"""The llama.cpp backend: GGUF models run with ``llama-cpp-python``.

The fallback where MLX is missing (Intel Macs, Linux, Windows) and the engine for GGUF files,
including the blobs of an existing Ollama store. The only module that imports ``llama_cpp``, and
only when a model loads, so GGUF models are listed (from :mod:`inference.gguf_file`) whether or not
the package is installed; using one without it is a clear error naming the extra to install.

A llama.cpp context here holds one sequence, so :class:`LlamaCppBatch` decodes one request at a
time (``max_sequences = 1``; the engine queues the rest in FIFO order). Each step prefills one
chunk of the prompt or samples one token, so cancellation lands between prefill chunks and between
tokens. The context's KV cache stays after a request, and the next one starts from the prefix they
share (a chat's next turn computes only its new tokens).

Sampling is llama.cpp's own sampler chain (penalties, top-k, top-p, min-p, temperature, seeded
distribution: the order llama.cpp's server uses); a grammar constraint masks the logits in place
before the chain runs. Chat templates are the GGUF's ``tokenizer.chat_template``, rendered with
the same Jinja renderer Hugging Face tokenizers use, so both backends see the same prompt.
"""

from __future__ import annotations

import codecs
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from inference.backend import (
    GenerationCancelled,
    ModelInfo,
    ModelLoadError,
    SamplingParams,
    Step,
    TokenLogprob,
)
from inference.batch import Admission, StepResult
from inference.chat_template import render
from inference.gguf_file import GGUFError, GGUFHeader, is_gguf, read_header
from validation.constraint import GrammarCache, TokenConstraint

INSTALL_HINT = (
    'the llama.cpp backend is not installed; install it with: pip install "trillm[llamacpp]" '
    "(it compiles llama.cpp, which takes about ten minutes)"
)
_DEFAULT_SEED = 0xFFFFFFFF  # llama.cpp: draw a random seed


def gguf_file(path: Path) -> Path | None:
    """The GGUF file ``path`` names: the file itself, or the (first shard of the) one in a directory."""
    if path.is_file():
        return path if is_gguf(path) else None
    if not path.is_dir():
        return None
    files = sorted(p for p in path.glob("*.gguf") if "mmproj" not in p.name.lower())
    return files[0] if files else None


def describe_gguf(file: Path, header: GGUFHeader | None = None) -> ModelInfo:
    """Model facts from a GGUF header (no weights read; ``header`` when it was read already)."""
    header = header or read_header(file)
    template = header.metadata.get("tokenizer.chat_template")
    vocab = header.metadata.get("tokenizer.ggml.tokens")
    vocab_size = getattr(vocab, "length", len(vocab) if isinstance(vocab, list) else None)
    size = sum(f.stat().st_size for f in _shards(file))
    context = header.arch_value("context_length")
    return ModelInfo(
        family=header.architecture,
        context_length=int(context) if isinstance(context, int) else 4096,
        parameter_count=header.parameter_count,
        quantization=header.quantization,
        chat_template=template if isinstance(template, str) else None,
        size_bytes=size,
        extra={
            "format": "gguf",
            "embedding_length": header.arch_value("embedding_length"),
            "block_count": header.arch_value("block_count"),
            "attention.head_count": header.arch_value("attention.head_count"),
            "attention.head_count_kv": header.arch_value("attention.head_count_kv"),
            "vocab_size": vocab_size,
        },
    )


def _shards(file: Path) -> list[Path]:
    """Every file of a split GGUF (``NAME-00001-of-00003.gguf``), or just ``file``."""
    stem = file.name
    marker = stem.rfind("-00001-of-")
    if marker < 0:
        return [file]
    return sorted(file.parent.glob(stem[:marker] + "-*-of-" + stem[marker + 10 :]))


def _token_text(header: GGUFHeader, key: str, llama: Any) -> str:
    """The text of the special token the metadata names under ``key`` ("" when none)."""
    token = header.metadata.get(key)
    if not isinstance(token, int) or token < 0:
        return ""
    return bytes(llama.detokenize([token], special=True)).decode("utf-8", errors="replace")


class LlamaCppModel:
    """A GGUF model loaded into one llama.cpp context."""

    max_sequences = 1

    def __init__(self, file: Path, context_length: int, threads: int | None) -> None:
        try:
            import llama_cpp
        except ImportError as error:
            raise ModelLoadError(INSTALL_HINT) from error
        self._lib = llama_cpp
        header = read_header(file)
        info = describe_gguf(file, header)
        window = max(16, min(info.context_length, context_length))
        try:
            self._llama: Any = llama_cpp.Llama(
                model_path=str(file),
                n_ctx=window,
                n_batch=512,
                n_threads=threads,
                n_gpu_layers=-1,  # every layer on the GPU where llama.cpp has one (Metal); else the CPU
                verbose=False,
            )
        except Exception as error:  # llama-cpp-python raises ValueError for unusable files
            raise ModelLoadError(f"llama.cpp cannot load {file.name}: {error}") from error
        self.info = replace(info, context_length=window)
        self._vocab = llama_cpp.llama_model_get_vocab(self._llama.model)
        self.n_vocab = int(self._llama.n_vocab())
        self.eog = {t for t in range(self.n_vocab) if llama_cpp.llama_vocab_is_eog(self._vocab, t)}
        self._bos = _token_text(header, "tokenizer.ggml.bos_token_id", self._llama)
        self._eos = _token_text(header, "tokenizer.ggml.eos_token_id", self._llama)
        add_bos = header.metadata.get("tokenizer.ggml.add_bos_token")
        self._add_bos = bool(add_bos) if isinstance(add_bos, bool) else bool(self._bos)
        self._grammars: GrammarCache | None = None
        self._batch: LlamaCppBatch | None = None

    def render_chat(
        self,
        messages: Sequence[dict[str, object]],
        *,
        tools: Sequence[dict[str, object]] = (),
        think: bool | None = None,
        template: str | None = None,
    ) -> str:
        chat_template = template or self.info.chat_template
        if chat_template is None:
            return "".join(str(m.get("content", "")) for m in messages)
        special = {"bos_token": self._bos, "eos_token": self._eos}
        return render(chat_template, messages, tools=tools, think=think, special=special)

    def tokenize(self, text: str) -> list[int]:
        add_bos = self._add_bos and not (self._bos and text.startswith(self._bos))
        return list(self._llama.tokenize(text.encode(), add_bos=add_bos, special=True))

    def single_tokens(self, texts: Sequence[str]) -> dict[str, int]:
        lib = self._lib
        marked = lib.LLAMA_TOKEN_ATTR_CONTROL | lib.LLAMA_TOKEN_ATTR_USER_DEFINED
        found = {}
        for text in texts:
            ids = self._llama.tokenize(text.encode(), add_bos=False, special=True)
            if len(ids) == 1 and lib.llama_token_get_attr(self._vocab, ids[0]) & marked:
                found[text] = int(ids[0])
        return found

    def constraint(self, grammar: str) -> TokenConstraint:
        if self._grammars is None:
            from llguidance.llamacpp import lltokenizer_from_vocab

            eos = sorted(self.eog)
            tokenizer = lltokenizer_from_vocab(self._vocab, n_vocab=self.n_vocab, eos_token=eos)
            self._grammars = GrammarCache(tokenizer, self.n_vocab, eos)
        return self._grammars.constraint(grammar)

    def open_batch(self) -> LlamaCppBatch:
        self._batch = LlamaCppBatch(self)
        return self._batch

    def logits(self) -> Any:
        """The last evaluated position's logits, as a writable NumPy view of llama.cpp's buffer."""
        pointer = self._lib.llama_get_logits_ith(self._llama.ctx, -1)
        return np.ctypeslib.as_array(pointer, shape=(self.n_vocab,))

    def close(self) -> None:
        if self._batch is not None:
            self._batch.close()
        self._grammars = None
        self._llama.close()


@dataclass
class _Member:
    """The one sequence a :class:`LlamaCppBatch` decodes."""

    key: int
    prompt: list[int]
    pending: int  # index of the next prompt token to prefill
    params: SamplingParams
    should_stop: Callable[[], bool]
    sampler: Any
    constraint: TokenConstraint | None
    decoder: codecs.IncrementalDecoder
    last: int | None = None  # the sampled token not yet evaluated


class LlamaCppBatch:
    """A :class:`~inference.batch.DecodeBatch` of at most one sequence on the model's context."""

    def __init__(self, model: LlamaCppModel) -> None:
        self._model = model
        self._member: _Member | None = None

    def add(self, admission: Admission) -> int:
        if self._member is not None:
            raise RuntimeError("a llama.cpp context decodes one sequence at a time")
        llama = self._model._llama
        prompt = list(admission.prompt)
        if len(prompt) >= llama.n_ctx():
            raise ValueError(f"the prompt ({len(prompt)} tokens) does not fit the context of {llama.n_ctx()}")
        # Keep the KV of the prefix this prompt shares with the last one; compute at least one token.
        held = llama.input_ids[: llama.n_tokens].tolist()
        reused = 0
        for mine, theirs in zip(prompt[:-1], held, strict=False):
            if mine != theirs:
                break
            reused += 1
        llama.n_tokens = reused
        self._member = _Member(
            key=admission.key,
            prompt=prompt,
            pending=reused,
            params=admission.params,
            should_stop=admission.should_stop,
            sampler=self._sampler(admission.params, prompt),
            constraint=admission.constraint,
            decoder=codecs.getincrementaldecoder("utf-8")(errors="replace"),
        )
        return reused

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
                sampler.accept(token)
        return sampler

    def remove(self, key: int) -> None:
        member = self._member
        if member is not None and member.key == key:
            member.sampler.close()
            self._member = None

    def step(self) -> list[tuple[int, StepResult]]:
        member = self._member
        if member is None:
            return []
        try:
            return self._advance(member)
        except Exception as error:  # this sequence's failure (e.g. a decode error) is its own
            return [(member.key, error)]

    def _advance(self, member: _Member) -> list[tuple[int, StepResult]]:
        llama = self._model._llama
        if member.pending < len(member.prompt):
            if member.pending and member.should_stop():
                raise GenerationCancelled
            end = min(len(member.prompt), member.pending + max(1, member.params.prefill_chunk))
            llama.eval(member.prompt[member.pending : end])
            member.pending = end
            if end < len(member.prompt):
                return []  # more prompt to read, in the next step
        elif member.last is not None:
            if llama.n_tokens >= llama.n_ctx():
                raise RuntimeError(f"the context window of {llama.n_ctx()} tokens is full")
            llama.eval([member.last])
        return [(member.key, self._sample(member))]

    def _sample(self, member: _Member) -> Step:
        model = self._model
        scored: TokenLogprob | None = None
        raw = None
        if member.constraint is not None or member.params.logprobs >= 0:  # else the C side alone
            logits = model.logits()
            if member.constraint is not None:
                logits[~member.constraint.allowed()] = -np.inf
            raw = logits.copy() if member.params.logprobs >= 0 else None
        token = int(member.sampler.sample(model._llama._ctx, -1))
        if member.constraint is not None:
            member.constraint.consume([token])
        if raw is not None:
            scored = self._score(raw, token, member.params.logprobs)
        member.last = token
        if token in model.eog:
            return Step(token, member.decoder.decode(b"", final=True), eos=True, logprob=scored)
        piece = bytes(model._llama.detokenize([token]))
        return Step(token, member.decoder.decode(piece), logprob=scored)

    def _score(self, logits: Any, token: int, top: int) -> TokenLogprob:
        shifted = logits - np.max(logits)
        logprobs = shifted - np.log(np.sum(np.exp(shifted)))
        best: tuple[tuple[str, float], ...] = ()
        if top > 0:
            ids = np.argsort(-logprobs)[:top]
            best = tuple((self._text(int(i)), float(logprobs[i])) for i in ids)
        return TokenLogprob(self._text(token), float(logprobs[token]), best)

    def _text(self, token: int) -> str:
        return bytes(self._model._llama.detokenize([token])).decode("utf-8", errors="replace")

    def __len__(self) -> int:
        return 0 if self._member is None else 1

    def close(self) -> None:
        if self._member is not None:
            self.remove(self._member.key)


@dataclass(frozen=True)
class LlamaCppSettings:
    """The context window a model loads with (capped by what the model was trained for) and the
    CPU threads llama.cpp uses (``None``: llama-cpp-python's default, half the cores)."""

    context_length: int = 4096
    threads: int | None = None


class LlamaCppBackend:
    """Serves ``.gguf`` files: placed in the store, pulled, or an Ollama store's blobs."""

    name = "llamacpp"

    def __init__(self, settings: LlamaCppSettings | None = None) -> None:
        self.settings = settings or LlamaCppSettings()

    def can_load(self, path: Path) -> bool:
        return gguf_file(path) is not None

    def describe(self, path: Path) -> ModelInfo:
        file = gguf_file(path)
        if file is None:
            raise ValueError(f"{path} holds no GGUF file")
        return describe_gguf(file)

    def load(self, path: Path) -> LlamaCppModel:
        file = gguf_file(path)
        if file is None:
            raise ModelLoadError(f"{path} holds no GGUF file")
        try:
            return LlamaCppModel(file, self.settings.context_length, self.settings.threads)
        except ModelLoadError:
            raise
        except (OSError, GGUFError) as error:
            raise ModelLoadError(f"{type(error).__name__}: {error}") from error

    def release_thread(self) -> None:
        """llama.cpp keeps nothing per thread."""


def default_threads() -> int | None:
    """``TRILLM_NUM_THREAD`` when set (Ollama's ``num_thread``), else llama-cpp-python's default."""
    value = os.environ.get("TRILLM_NUM_THREAD")
    return max(1, int(value)) if value else None
