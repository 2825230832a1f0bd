"""The seam between the engine and whatever runs a model.

A backend turns a model directory into a :class:`LoadedModel`; a loaded model renders chat
messages into a prompt, tokenizes, and generates token by token. Everything here is blocking and
runs on the engine's dedicated worker thread, never on the Trio loop. The engine owns scheduling,
stop strings, limits, timing and cancellation; a backend only computes.

The engine drives every model through a :class:`~inference.engine.batch.DecodeBatch` from
:meth:`LoadedModel.open_batch`; a backend with batched kernels implements one, any other wraps a
one-sequence generator in :class:`~inference.engine.batch.GeneratorBatch`.

Cancellation: the engine removes a cancelled sequence from its batch before the next step, so no
backend needs its own cancel path; a one-sequence generator also receives ``should_stop`` to check
between prefill chunks (raising :class:`GenerationCancelled`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from inference.engine.batch import DecodeBatch
    from validation.constraint import TokenConstraint


class GenerationCancelled(Exception):
    """Raised inside a backend's generator when ``should_stop()`` turned true during prefill."""


class ModelLoadError(Exception):
    """Raised by :meth:`Backend.load` when a model directory cannot be loaded (bad files)."""


class ModelUnavailable(Exception):
    """The model cannot run now, for a reason outside the request: a rank of the distributed
    group holding its shards was lost. Its message says what was lost and what to do."""


class WrongModelKind(Exception):
    """An embedding model asked to generate, a generation model asked for embeddings, or a
    text-only model sent images."""


@dataclass(frozen=True)
class SamplingParams:
    """Per-request sampling settings, already validated and defaulted (Ollama's defaults)."""

    temperature: float = 0.8
    top_k: int = 40
    top_p: float = 0.9
    min_p: float = 0.0
    seed: int | None = None
    repeat_penalty: float = 1.0
    repeat_last_n: int = 64
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    prefill_chunk: int = 512
    logprobs: int = -1  # -1: none; 0: the sampled token's; k: also the k most likely


@dataclass(frozen=True)
class TokenLogprob:
    """A sampled token's log probability and, when asked, the most likely alternatives."""

    token: str
    logprob: float
    top: tuple[tuple[str, float], ...] = ()


@dataclass(frozen=True)
class Step:
    """One decoded token and the text it completes ("" while a character is still partial)."""

    token: int
    text: str
    eos: bool = False
    logprob: TokenLogprob | None = None


@dataclass(frozen=True)
class ModelInfo:
    """What the API reports about a model without generating: read at load time."""

    family: str
    context_length: int
    parameter_count: int
    quantization: str
    chat_template: str | None
    size_bytes: int
    extra: dict[str, object] = field(default_factory=dict)
    # The window the model was trained for, where the loaded window is smaller (llama.cpp sizes its
    # context at load); 0: ``context_length`` is already all of it.
    trained_context: int = 0
    # An embedding model's pooling of its token states ("mean", "cls", "last"); "" for a model
    # that generates.
    pooling: str = ""
    vision: bool = False  # reads images (a vision tower, or a GGUF's projector)

    @property
    def embedding(self) -> bool:
        return bool(self.pooling)

    def can_grow_to(self, num_ctx: int) -> bool:
        """Whether loading again with ``num_ctx`` would give a larger window than this one."""
        return self.context_length < min(num_ctx, self.trained_context)


class LoadedModel(Protocol):
    """A model resident in memory. All methods run on the engine's worker thread.

    ``info.context_length`` is the window the loaded model holds: no request's prompt and reply
    go beyond it. ``max_sequences`` caps the sequences its batch decodes at once (0: only the
    engine's ``num_parallel`` does).
    """

    info: ModelInfo
    max_sequences: int

    def render_chat(
        self,
        messages: Sequence[dict[str, object]],
        *,
        tools: Sequence[dict[str, object]] = (),
        think: bool | None = None,
        template: str | None = None,
    ) -> str:
        """Render messages (and tools) through the model's chat template, ending with the
        assistant cue; ``think`` is passed to templates that can switch reasoning on or off.
        ``template`` (a Jinja chat template) replaces the model's own."""
        ...

    def tokenize(self, text: str) -> list[int]:
        """Token ids for ``text`` (special tokens in it are recognised)."""
        ...

    def tokenize_with_images(self, text: str, images: Sequence[bytes]) -> tuple[list[int], object]:
        """Token ids for a prompt rendered with images (each image's placeholder expanded to the
        tokens its features fill) and what the batch needs to encode them (``Admission.media``).

        Vision models only (``info.vision``); the others raise :class:`WrongModelKind`. Runs the
        image processor (decoding, resizing); an image that cannot be decoded raises
        :class:`validation.images.ImageProblem`.
        """
        ...

    def single_tokens(self, texts: Sequence[str]) -> dict[str, int]:
        """Those ``texts`` the tokenizer holds as one added token, with their ids."""
        ...

    def constraint(self, grammar: str) -> TokenConstraint | None:
        """A fresh grammar constraint for one request (compiled grammars are cached per model).

        ``None`` only from test doubles that cannot enforce (their output is still validated).
        Raises :class:`validation.constraint.ConstraintError` if the grammar does not compile.
        """
        ...

    def open_batch(self) -> DecodeBatch:
        """A new, empty decode batch for this model (the engine keeps one per loaded model).

        A backend without batched kernels returns ``GeneratorBatch(its_generate_function)``.
        """
        ...

    def embed(self, batch: Sequence[Sequence[int]]) -> list[list[float]]:
        """One pooled, not yet normalised, vector per token sequence, computed together (an
        embedding model; the others raise :class:`WrongModelKind`). The engine sends a few
        thousand tokens at a time, so that the streams of other models keep flowing."""
        ...

    def close(self) -> None:
        """Release the weights and caches."""
        ...


class Backend(Protocol):
    """A way of running models of one on-disk format."""

    name: str

    def can_load(self, path: Path) -> bool:
        """Whether ``path`` is a model this backend serves (cheap; reads no weights)."""
        ...

    def describe(self, path: Path) -> ModelInfo:
        """Model facts from its files without loading weights (for tags and show)."""
        ...

    def load(self, path: Path, num_ctx: int | None = None) -> LoadedModel:
        """Load weights and tokenizer; raises :class:`ModelLoadError` on unusable files.

        ``num_ctx`` is a window a request asked for: a backend that sizes its context at load
        holds at least that much (up to the trained window); ``None``: its default."""
        ...

    def release_thread(self) -> None:
        """On the worker thread, as it ends: free what the backend keeps per thread.

        MLX keeps its streams per thread and no longer frees them at exit on its own: a thread
        that used MLX and ends without ``mx.clear_streams()`` can abort the process as it exits.
        """
        ...


def placement_of(model: object) -> dict[str, object] | None:
    """Where a loaded model's shards are (ranks, strategy, each rank's share), or ``None`` for a
    model held by this process alone (the optional ``placement()`` of a
    :class:`LoadedModel`)."""
    placement = getattr(model, "placement", None)
    return placement() if callable(placement) else None
