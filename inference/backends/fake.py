"""A scripted backend for fast engine and HTTP tests, shipped with the package.

A fake model is a directory holding ``fake.json``::

    {"pieces": ["Hello", " world"], "loop": false, "delay": 0.0,
     "prefill_delay": 0.0, "fail_at": null, "load_error": null, "template": "..."}

It "generates" the pieces in order (repeating them when ``loop`` is true). Its batch paces itself
as a batched engine's forward pass does, however many sequences it holds: a step takes ``delay``
seconds when it decodes, plus ``prefill_delay`` seconds per token of the longest prompt chunk it
prefills (the sequences' chunks go through together). It raises at token
``fail_at``, and refuses to load with ``load_error``; ``"fail_with": "memory"`` makes either failure an
out-of-memory error. Tokens are characters (ids are code points), so prompts and contexts
round-trip. Every prompt it receives is recorded in :attr:`FakeBackend.prompts`.

With ``"vision": true`` it reads images: a chat message's images render as ``<image>`` before its
text, and each becomes ``[image WxH]`` in the prompt's tokens (decoded with Pillow, as a real
processor would); the batch "encodes" each image in a step of its own taking ``encode_delay``
seconds, before the prompt's first chunk.

With ``"pooling": "mean"`` it is an embedding model instead: a token's vector is a fixed function of
its id (``dimensions`` wide, default 8), pooled over the input; ``embed_delay`` seconds per batch
it computes. Every batch's sizes are recorded in :attr:`FakeBackend.embed_batches`.
"""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Callable, Generator, Sequence
from pathlib import Path
from typing import Any

from inference.backends.base import GenerationCancelled, ModelInfo, ModelLoadError, Step
from inference.backends.model_kinds import EmbeddingOnly, GenerationOnly
from inference.engine.batch import Admission, GeneratorBatch, StepResult
from validation.images import decode_image, images_in

EOS = 0


class FakeModel(GenerationOnly):
    """Plays a script; see the module docstring."""

    max_sequences = 0

    def __init__(self, script: dict[str, Any], info: ModelInfo, log: list[list[int]]) -> None:
        self.info = info
        self._script = script
        self._log = log

    def render_chat(
        self,
        messages: Sequence[dict[str, object]],
        *,
        tools: Sequence[dict[str, object]] = (),
        think: bool | None = None,
        template: str | None = None,
    ) -> str:
        rendered = "".join(
            f"<{m.get('role')}>{'<image>' * len(images_in(m))}{m.get('content', '')}" for m in messages
        )
        if template is not None:  # a stand-in for Jinja: the template wraps the conversation
            return template.replace("{{ messages }}", rendered)
        return rendered + "<assistant>"

    def tokenize(self, text: str) -> list[int]:
        return [ord(c) for c in text]

    def tokenize_with_images(self, text: str, images: Sequence[bytes]) -> tuple[list[int], object]:
        if not self.info.vision:
            return super().tokenize_with_images(text, images)
        pictures = [decode_image(data, f"image {i}") for i, data in enumerate(images)]
        for picture in pictures:
            width, height = picture.size  # type: ignore[attr-defined]
            text = text.replace("<image>", f"[image {width}x{height}]", 1)
        return self.tokenize(text), len(pictures)

    def single_tokens(self, texts: Sequence[str]) -> dict[str, int]:
        return {}

    def constraint(self, grammar: str) -> None:
        return None  # a script cannot be steered; its output is still validated

    def generate(
        self, admission: Admission, *, prefilled: Callable[[int], None]
    ) -> Generator[Step | None, None, None]:
        """The script's tokens; the length of each prompt chunk goes to ``prefilled`` (the
        batch's pacing)."""
        prompt, should_stop = admission.prompt, admission.should_stop
        self._log.append(list(prompt))
        for _ in range(admission.media if isinstance(admission.media, int) else 0):
            time.sleep(float(self._script.get("encode_delay", 0.0)))
            yield None  # an image encoded: a step of its own
            if should_stop():
                raise GenerationCancelled
        chunk = max(admission.params.prefill_chunk, 1)
        for start in range(0, len(prompt), chunk):
            if start:
                yield None  # one chunk a batch step, as the real backends prefill
                if should_stop():
                    raise GenerationCancelled
            prefilled(len(prompt[start : start + chunk]))
        pieces: list[str] = list(self._script.get("pieces", ["ok"]))
        fail_at = self._script.get("fail_at")
        n = 0
        while True:
            for piece in pieces:
                if fail_at is not None and n >= int(fail_at):
                    if self._script.get("fail_with") == "memory":
                        raise MemoryError("[metal::malloc] injected: out of memory")
                    raise RuntimeError("injected failure")
                n += 1
                yield Step(ord(piece[0]) if piece else 32, piece)
            if not self._script.get("loop", False):
                yield Step(EOS, "", eos=True)
                return

    def open_batch(self) -> GeneratorBatch:
        return _PacedBatch(
            self, float(self._script.get("delay", 0.0)), float(self._script.get("prefill_delay", 0.0))
        )

    def close(self) -> None:
        pass


class _PacedBatch(GeneratorBatch):
    """The fake's batch: a step takes ``delay`` if it yields tokens and ``prefill_delay`` per token
    of its longest prompt chunk, for one sequence or many."""

    def __init__(self, model: FakeModel, delay: float, prefill_delay: float) -> None:
        super().__init__(functools.partial(model.generate, prefilled=self._prefilled))
        self._delay = delay
        self._prefill_delay = prefill_delay
        self._chunk = 0  # the longest prompt chunk read in this step

    def _prefilled(self, tokens: int) -> None:
        self._chunk = max(self._chunk, tokens)

    def step(self) -> list[tuple[int, StepResult]]:
        self._chunk = 0
        results = super().step()
        pause = self._prefill_delay * self._chunk
        if any(isinstance(result, Step) for _, result in results):
            pause += self._delay
        if pause:
            time.sleep(pause)
        return results


def token_vector(token: int, width: int) -> list[float]:
    """The fake embedding model's vector for one token id."""
    return [float(((token * (i + 3)) % 17) - 8) for i in range(width)]


class FakeEmbeddingModel(EmbeddingOnly):
    """Mean-pools :func:`token_vector` over each input."""

    def __init__(self, script: dict[str, Any], info: ModelInfo, batches: list[list[int]]) -> None:
        self.info = info
        self._width = int(script.get("dimensions", 8))
        self._delay = float(script.get("embed_delay", 0.0))
        self._batches = batches

    def tokenize(self, text: str) -> list[int]:
        return [ord(c) for c in text]

    def embed(self, batch: Sequence[Sequence[int]]) -> list[list[float]]:
        self._batches.append([len(tokens) for tokens in batch])
        time.sleep(self._delay)
        out = []
        for tokens in batch:
            vectors = [token_vector(t, self._width) for t in tokens] or [[0.0] * self._width]
            out.append([sum(column) / len(vectors) for column in zip(*vectors, strict=True)])
        return out

    def close(self) -> None:
        pass


class FakeBackend:
    """Loads ``fake.json`` directories."""

    name = "fake"

    def __init__(self) -> None:
        self.prompts: list[list[int]] = []
        self.embed_batches: list[list[int]] = []
        self.loads = 0

    def can_load(self, path: Path) -> bool:
        return (path / "fake.json").is_file()

    def describe(self, path: Path) -> ModelInfo:
        script = self._script(path)
        return ModelInfo(
            family="fake",
            context_length=int(script.get("context_length", 4096)),
            parameter_count=1000,
            quantization="F32",
            chat_template=str(script.get("template", "{{ .Prompt }}")),
            size_bytes=(path / "fake.json").stat().st_size,
            pooling=str(script.get("pooling", "")),
            vision=bool(script.get("vision", False)),
        )

    def load(self, path: Path, num_ctx: int | None = None) -> FakeModel | FakeEmbeddingModel:
        script = self._script(path)
        if script.get("load_error"):
            if script.get("fail_with") == "memory":
                raise MemoryError(str(script["load_error"]))
            raise ModelLoadError(str(script["load_error"]))
        time.sleep(float(script.get("load_delay", 0.0)))
        self.loads += 1
        if script.get("pooling"):
            return FakeEmbeddingModel(script, self.describe(path), self.embed_batches)
        return FakeModel(script, self.describe(path), self.prompts)

    def release_thread(self) -> None:
        """Nothing to release."""

    @staticmethod
    def _script(path: Path) -> dict[str, Any]:
        script: dict[str, Any] = json.loads((path / "fake.json").read_text())
        return script
