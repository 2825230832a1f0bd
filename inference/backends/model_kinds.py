"""What a model of one kind answers when asked for the other kind's work.

A loaded model either generates or embeds (:attr:`~inference.backends.base.ModelInfo.pooling`
says which). Generation models take :class:`GenerationOnly` for their ``embed``; embedding models
take :class:`EmbeddingOnly` for the generation methods; a model without a vision tower takes
:class:`TextOnly`'s refusal of images. The HTTP layer refuses such requests from the model's
description before they reach the engine; these are the engine's own guard.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NoReturn

from inference.backends.base import WrongModelKind


class TextOnly:
    """``tokenize_with_images`` for a model that reads no images."""

    def tokenize_with_images(self, text: str, images: Sequence[bytes]) -> tuple[list[int], object]:
        raise WrongModelKind("this is a text-only model; it does not read images")


class GenerationOnly(TextOnly):
    """``embed`` for a model that generates (text only, unless it overrides
    ``tokenize_with_images``)."""

    def embed(self, batch: Sequence[Sequence[int]]) -> list[list[float]]:
        raise WrongModelKind("this model generates text; it does not compute embeddings")


class EmbeddingOnly(TextOnly):
    """The generation methods of a model that only computes embeddings."""

    max_sequences = 0

    def _cannot(self) -> NoReturn:
        raise WrongModelKind("this is an embedding model; it does not generate text")

    def render_chat(self, messages: Sequence[dict[str, object]], **_: object) -> str:
        self._cannot()

    def single_tokens(self, texts: Sequence[str]) -> dict[str, int]:
        return {}

    def constraint(self, grammar: str) -> None:
        self._cannot()

    def open_batch(self) -> NoReturn:
        self._cannot()
