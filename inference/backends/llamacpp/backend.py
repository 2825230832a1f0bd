"""The llama.cpp backend: GGUF models run with ``llama-cpp-python``.

The fallback where MLX is missing (Intel Macs, Linux, Windows) and the engine for GGUF files,
including the blobs of an existing Ollama store. The only module that imports ``llama_cpp``, and
only when a model loads, so GGUF models are listed (from :mod:`inference.store.gguf_file`) whether or not
the package is installed; using one without it is a clear error naming the extra to install.

A model's context holds ``parallel`` sequences (``TRILLM_NUM_PARALLEL``, as Ollama allots
``OLLAMA_NUM_PARALLEL`` slots), each with the model's window, in one unified KV cache; they decode
together in :class:`~inference.backends.llamacpp.batch.LlamaCppBatch`. Chat templates are the GGUF's
``tokenizer.chat_template``, rendered with the same Jinja renderer Hugging Face tokenizers use, so
both backends see the same prompt.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from inference.backends.base import ModelInfo, ModelLoadError
from inference.backends.chat_template import render
from inference.backends.llamacpp.batch import LlamaCppBatch
from inference.backends.llamacpp.embedding import POOLING_TYPES, LlamaCppEmbeddingModel
from inference.backends.llamacpp.vision import Projector, projector_file, with_markers
from inference.backends.model_kinds import GenerationOnly
from inference.store.gguf_file import GGUFError, GGUFHeader, is_gguf, read_header
from validation.constraint import GrammarCache, TokenConstraint


def install_hint() -> str:
    """What to run to add llama.cpp, for the way trillm itself was installed."""
    command = 'pip install "trillm[llamacpp]"'
    try:
        import json
        from importlib.metadata import distributions
        from urllib.parse import unquote, urlparse

        # The installed record (a checkout's own trillm.egg-info may come first on sys.path).
        found = (d.read_text("direct_url.json") for d in distributions(name="trillm"))
        origin = json.loads(next((text for text in found if text), "{}"))
        if origin.get("dir_info", {}).get("editable"):
            here = unquote(urlparse(origin.get("url", "")).path)
            where = "." if Path(here).resolve() == Path.cwd().resolve() else here
            command = f'pip install -e "{where}[llamacpp]"'
    except (ValueError, OSError):
        pass
    return (
        f"the llama.cpp backend is not installed; install it with: {command} "
        "(it compiles llama.cpp, which takes about ten minutes)"
    )


log = logging.getLogger("trillm.llamacpp")
# Tokens one llama_decode takes: the decoding sequences' tokens and the prompt chunks of a step.
_BATCH_TOKENS = 512


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
    pooling = header.arch_value("pooling_type")
    return ModelInfo(
        family=header.architecture,
        context_length=int(context) if isinstance(context, int) else 4096,
        parameter_count=header.parameter_count,
        quantization=header.quantization,
        chat_template=template if isinstance(template, str) else None,
        size_bytes=size,
        pooling=POOLING_TYPES.get(pooling, "") if isinstance(pooling, int) else "",
        extra={
            "format": "gguf",
            "embedding_length": header.arch_value("embedding_length"),
            "block_count": header.arch_value("block_count"),
            "attention.head_count": header.arch_value("attention.head_count"),
            "attention.head_count_kv": header.arch_value("attention.head_count_kv"),
            "vocab_size": vocab_size,
        },
    )


KV_SHARE_OF_MEMORY = 4  # the default window's KV cache stays under 1/4 of physical memory
MIN_DEFAULT_WINDOW = 4096


def kv_bytes_per_token(header: GGUFHeader) -> int:
    """Bytes of f16 keys and values one token takes in every layer (0 when the header lacks
    what it takes to tell)."""
    layers = header.arch_value("block_count")
    width = header.arch_value("embedding_length")
    heads = header.arch_value("attention.head_count")
    kv_heads = header.arch_value("attention.head_count_kv")
    if not all(isinstance(v, int) and v > 0 for v in (layers, width, heads)):
        return 0
    assert isinstance(layers, int) and isinstance(width, int) and isinstance(heads, int)
    kv = kv_heads if isinstance(kv_heads, int) and kv_heads > 0 else heads
    key = header.arch_value("attention.key_length")
    value = header.arch_value("attention.value_length")
    head = width // heads
    key_width = key if isinstance(key, int) else head
    value_width = value if isinstance(value, int) else head
    return layers * kv * (key_width + value_width) * 2


def physical_memory() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 0


def load_window(
    info: ModelInfo, header: GGUFHeader, settings: LlamaCppSettings, slots: int, num_ctx: int | None
) -> int:
    """The tokens each sequence slot holds: what a request asked for (``num_ctx``), else the
    default (``TRILLM_CONTEXT_LENGTH``), never beyond the trained window. The default is halved
    (not below 4096) while ``slots`` windows' KV cache would take over a quarter of memory; a
    window a request asked for is given as asked."""
    window = min(info.context_length, num_ctx or settings.context_length)
    per_token, memory = kv_bytes_per_token(header), physical_memory()
    if num_ctx is None and per_token and memory:
        while window > MIN_DEFAULT_WINDOW and window * slots * per_token > memory // KV_SHARE_OF_MEMORY:
            window //= 2
        if window < min(info.context_length, settings.context_length):
            log.warning(
                "llama.cpp: %d slots of %d tokens would take %d MiB of KV cache; loading %d-token "
                "slots (set TRILLM_NUM_PARALLEL lower, or ask for num_ctx, for longer prompts)",
                slots, settings.context_length, settings.context_length * slots * per_token >> 20, window,
            )  # fmt: skip
    return max(16, window)


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


class LlamaCppModel(GenerationOnly):
    """A GGUF model loaded into one llama.cpp context of ``parallel`` sequence slots."""

    def __init__(
        self,
        file: Path,
        settings: LlamaCppSettings,
        header: GGUFHeader,
        num_ctx: int | None = None,
        projector: Path | None = None,
    ) -> None:
        try:
            import llama_cpp
            from llama_cpp._internals import LlamaContext
            from llama_cpp._utils import suppress_stdout_stderr
        except ImportError as error:
            raise ModelLoadError(install_hint()) from error
        self._lib = llama_cpp
        info = describe_gguf(file, header)
        self.max_sequences = max(1, settings.parallel)
        window = load_window(info, header, settings, self.max_sequences, num_ctx)
        self.reuse_prefixes = settings.prefix_cache
        self.batch_tokens = _BATCH_TOKENS
        try:
            # The Llama object holds the weights and the tokenizer; its own context is left small,
            # and the sequences decode in the context below.
            self._llama: Any = llama_cpp.Llama(
                model_path=str(file),
                n_ctx=16,
                n_batch=16,
                n_threads=settings.threads,
                n_gpu_layers=-1,  # every layer on the GPU where llama.cpp has one (Metal); else the CPU
                verbose=False,
            )
            params = llama_cpp.llama_context_params.from_buffer_copy(self._llama.context_params)
            params.n_ctx = window * self.max_sequences
            params.n_batch = params.n_ubatch = _BATCH_TOKENS
            params.n_seq_max = self.max_sequences
            params.kv_unified = True  # one pool of cells; a shared prefix is held once
            # (llama.cpp warns that the unified cache is longer than the training window; each
            # sequence is held to the window here, which it cannot know.)
            with suppress_stdout_stderr(disable=False):
                self.context = LlamaContext(model=self._llama._model, params=params, verbose=False)
        except Exception as error:  # llama-cpp-python raises ValueError for unusable files
            raise ModelLoadError(f"llama.cpp cannot load {file.name}: {error}") from error
        try:
            self.projector = (
                None if projector is None else Projector(projector, self._llama.model, settings.threads)
            )
        except ModelLoadError:
            self.context.close()  # type: ignore[no-untyped-call]
            self._llama.close()
            raise
        self.info = replace(
            info, context_length=window, trained_context=info.context_length, vision=projector is not None
        )
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
        if self.projector is not None:  # images become libmtmd's markers, where the template puts text
            messages = [with_markers(m) for m in messages]
        return render(chat_template, messages, tools=tools, think=think, special=special)

    def tokenize(self, text: str) -> list[int]:
        return list(self._llama.tokenize(text.encode(), add_bos=self._adds_bos(text), special=True))

    def _adds_bos(self, text: str) -> bool:
        return self._add_bos and not (self._bos and text.startswith(self._bos))

    def tokenize_with_images(self, text: str, images: Sequence[bytes]) -> tuple[list[int], object]:
        if self.projector is None:
            return super().tokenize_with_images(text, images)
        return self.projector.tokenize(text, images, self._adds_bos(text))

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
        if self._batch is not None:
            self._batch.close()
        self._batch = LlamaCppBatch(self)
        return self._batch

    def logits(self, row: int) -> Any:
        """The logits of row ``row`` of the last decoded batch, as a writable NumPy view of
        llama.cpp's buffer."""
        pointer = self._lib.llama_get_logits_ith(self.context.ctx, row)
        return np.ctypeslib.as_array(pointer, shape=(self.n_vocab,))

    def piece(self, token: int) -> bytes:
        """The bytes of ``token`` as it reads in a reply."""
        return bytes(self._llama.detokenize([token]))

    def text(self, token: int) -> str:
        """``token``'s text (for log probabilities), invalid UTF-8 replaced."""
        return self.piece(token).decode("utf-8", errors="replace")

    def close(self) -> None:
        if self._batch is not None:
            self._batch.close()
            self._batch = None
        self._grammars = None
        if self.projector is not None:
            self.projector.close()
        self.context.close()  # type: ignore[no-untyped-call]
        self._llama.close()


@dataclass(frozen=True)
class LlamaCppSettings:
    """The context window a model loads with (capped by what the model was trained for; each of
    ``parallel`` sequences has one), and the CPU threads llama.cpp uses (``None``:
    llama-cpp-python's default, half the cores). With ``prefix_cache`` off, every request computes
    its whole prompt."""

    context_length: int = 4096
    threads: int | None = None
    parallel: int = 1
    prefix_cache: bool = True


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
        return replace(describe_gguf(file), vision=projector_file(path) is not None)

    def load(self, path: Path, num_ctx: int | None = None) -> LlamaCppModel | LlamaCppEmbeddingModel:
        file = gguf_file(path)
        if file is None:
            raise ModelLoadError(f"{path} holds no GGUF file")
        try:
            header = read_header(file)  # once: the vocabulary makes it the costly part of a GGUF to read
            info = describe_gguf(file, header)
            if info.embedding:
                return LlamaCppEmbeddingModel(file, info, self.settings.threads, install_hint())
            return LlamaCppModel(file, self.settings, header, num_ctx, projector_file(path))
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
