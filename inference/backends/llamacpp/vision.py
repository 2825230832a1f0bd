"""GGUF vision models on llama.cpp: the model's projector file (``mmproj``) through libmtmd.

llama.cpp splits a vision model in two files, as Ollama and llama-server pair them: the language
model's GGUF and a projector GGUF (the vision encoder and the projection into the language model's
embeddings, ``general.architecture`` ``clip``). A model directory holding both (``model.gguf``
and ``mmproj-*.gguf``, as Hugging Face GGUF repos ship them) is a vision model.

libmtmd (llama.cpp's multimodal library, bound by llama-cpp-python) does what a processor does:
the prompt holds its marker where each image goes (:data:`MARKER`, written in place of a
message's images before the chat template runs); :meth:`Projector.tokenize` splits the prompt
into text chunks and image chunks (adding the model's own image start and end tokens), and
:meth:`Projector.eval_chunk` encodes an image chunk and decodes its embeddings into one sequence
of the context. The batch (:mod:`inference.backends.llamacpp.batch`) runs a sequence's chunks one a
step, so a client that leaves while its image is encoded costs at most that step.

Projectors whose language model places image tokens on M-RoPE positions (Qwen2-VL and its
successors) need four positions a token in every later batch, which the shared batch does not
write: their images are refused with a message saying so (the MLX build of such a model reads them).
"""

from __future__ import annotations

import ctypes
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from inference.backends.base import ModelLoadError, WrongModelKind
from validation.images import ImageProblem, decode_image, images_in

MARKER = "<__media__>"  # libmtmd's default marker: where an image's chunk goes in the prompt


def projector_file(path: Path) -> Path | None:
    """The projector of the model at ``path``: an ``mmproj*.gguf`` in the model's directory."""
    if not path.is_dir():
        return None
    files = sorted(p for p in path.glob("*.gguf") if "mmproj" in p.name.lower())
    return files[0] if files else None


def with_markers(message: dict[str, object]) -> dict[str, object]:
    """A message whose images are libmtmd markers before its text (what the projector reads)."""
    images = images_in(message)
    if not images:
        return message
    out = {k: v for k, v in message.items() if k != "images"}
    out["content"] = MARKER * len(images) + str(message.get("content") or "")
    return out


@dataclass
class Span:
    """A chunk of a tokenized prompt: the prompt positions it fills and whether it is an image."""

    start: int
    end: int
    image: bool


class ImagePrompt:
    """A prompt as libmtmd split it (its chunks are freed with :meth:`close`)."""

    def __init__(self, chunks: Any, spans: list[Span]) -> None:
        self.chunks = chunks
        self.spans = spans

    @property
    def projected(self) -> int:
        """The chunks the projector evaluates: all but a final text chunk, which the shared
        batch reads as any prompt."""
        return len(self.spans) - (0 if self.spans[-1].image else 1)

    def close(self) -> None:
        if self.chunks is not None:
            from llama_cpp import mtmd_cpp

            mtmd_cpp.mtmd_input_chunks_free(self.chunks)
            self.chunks = None

    def __del__(self) -> None:
        self.close()


_QUIET: Any = None  # the log callback that keeps libmtmd's progress lines off stderr


def _silence(mtmd: Any) -> None:
    global _QUIET
    import llama_cpp

    if _QUIET is None:
        _QUIET = llama_cpp.llama_log_callback(lambda level, text, data: None)
    mtmd.mtmd_log_set(_QUIET, None)
    mtmd.mtmd_helper_log_set(_QUIET, None)


class Projector:
    """One model's libmtmd context: tokenizing prompts with images, encoding their chunks."""

    def __init__(self, file: Path, llama_model: Any, threads: int | None) -> None:
        from llama_cpp import mtmd_cpp

        self._lib = mtmd_cpp
        _silence(mtmd_cpp)
        params = mtmd_cpp.mtmd_context_params_default()
        params.print_timings = False
        if threads:
            params.n_threads = threads
        self._context = mtmd_cpp.mtmd_init_from_file(str(file).encode(), llama_model, params)
        if not self._context:
            raise ModelLoadError(f"llama.cpp cannot load the projector {file.name}")
        if not mtmd_cpp.mtmd_support_vision(self._context):
            self.close()
            raise ModelLoadError(f"the projector {file.name} has no vision encoder")
        self.mrope = bool(mtmd_cpp.mtmd_decode_use_mrope(self._context))

    def tokenize(
        self, text: str, images: Sequence[bytes], add_special: bool
    ) -> tuple[list[int], ImagePrompt]:
        """The prompt's tokens (an image's positions hold 0) and its chunks."""
        lib = self._lib
        if self.mrope:
            raise WrongModelKind(
                "this GGUF's projector places images on M-RoPE positions (Qwen2-VL style), which "
                "the llama.cpp backend does not support yet; use the model's MLX build for images"
            )
        bitmaps = []
        try:
            for i, data in enumerate(images):
                picture: Any = decode_image(data, f"image {i}")
                raw = picture.tobytes()
                buffer = (ctypes.c_uint8 * len(raw)).from_buffer_copy(raw)
                bitmaps.append(lib.mtmd_bitmap_init(picture.width, picture.height, buffer))
            encoded = text.encode()
            source = lib.mtmd_input_text(encoded, len(encoded), add_special, True)
            chunks = lib.mtmd_input_chunks_init()
            prompt = ImagePrompt(chunks, [])
            array = (lib.mtmd_bitmap_p_ctypes * len(bitmaps))(*bitmaps)
            code = lib.mtmd_tokenize(self._context, chunks, ctypes.byref(source), array, len(bitmaps))
        finally:
            for bitmap in bitmaps:
                lib.mtmd_bitmap_free(bitmap)
        if code != 0:
            prompt.close()
            if code == 1:
                raise ImageProblem(
                    f"the prompt has a different number of image places than images ({len(images)})"
                )
            raise ImageProblem(f"llama.cpp could not preprocess the images (code {code})")
        tokens: list[int] = []
        for i in range(lib.mtmd_input_chunks_size(chunks)):
            chunk = lib.mtmd_input_chunks_get(chunks, i)
            image = lib.mtmd_input_chunk_get_type(chunk) != lib.MTMD_INPUT_CHUNK_TYPE_TEXT
            start = len(tokens)
            if image:
                tokens.extend([0] * int(lib.mtmd_input_chunk_get_n_tokens(chunk)))
            else:
                count = ctypes.c_size_t()
                ids = lib.mtmd_input_chunk_get_tokens_text(chunk, ctypes.byref(count))
                tokens.extend(int(ids[j]) for j in range(count.value))
            prompt.spans.append(Span(start, len(tokens), image))
        return tokens, prompt

    def eval_chunk(
        self, context: Any, prompt: ImagePrompt, index: int, seq: int, n_batch: int, logits: bool
    ) -> None:
        """Encode chunk ``index`` (an image: the vision encoder; text: its tokens) and decode it
        into sequence ``seq`` at the chunk's positions; ``logits``: keep the last row's logits."""
        import llama_cpp

        lib = self._lib
        span = prompt.spans[index]
        chunk = lib.mtmd_input_chunks_get(prompt.chunks, index)
        reached = llama_cpp.llama_pos(0)
        code = lib.mtmd_helper_eval_chunk_single(
            self._context, context, chunk, span.start, seq, n_batch, logits, ctypes.byref(reached)
        )
        if code != 0:
            raise RuntimeError(f"llama.cpp could not encode the image (code {code})")

    def close(self) -> None:
        if self._context:
            self._lib.mtmd_free(self._context)
            self._context = None
