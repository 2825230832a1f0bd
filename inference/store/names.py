"""Model names: Ollama's ``[namespace/]model[:tag]`` grammar, checked before any file is touched.

A name reaches the file system only through :func:`parse_name`, which accepts a short alphabet
(letters, digits, ``.``, ``_``, ``-``; each part starting with a letter or digit, at most 80
characters), so ``..``, absolute paths, separators, NUL and percent-encoded tricks never get
through. A leading ``hf.co/`` or ``huggingface.co/`` (how Ollama users name Hugging Face models)
is dropped: ``hf.co/org/repo`` and ``org/repo`` are the same model.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_PART = r"[A-Za-z0-9][A-Za-z0-9._-]{0,79}"
_NAME = re.compile(rf"(?:(?P<ns>{_PART})/)?(?P<model>{_PART})(?::(?P<tag>{_PART}))?")
HUB_PREFIXES = ("hf.co/", "huggingface.co/", "https://huggingface.co/", "https://hf.co/")
DEFAULT_TAG = "latest"


class InvalidModelName(ValueError):
    """The name is not ``[namespace/]model[:tag]``."""


@dataclass(frozen=True)
class ModelName:
    """A valid name, split into its parts; ``str()`` gives the canonical ``ns/model:tag``."""

    namespace: str | None
    model: str
    tag: str

    def __str__(self) -> str:
        return f"{self.namespace + '/' if self.namespace else ''}{self.model}:{self.tag}"

    @property
    def key(self) -> str:
        """What two names must share to be the same model (names match case-insensitively)."""
        return str(self).lower()

    @property
    def repo(self) -> str:
        """``ns/model`` without the tag: a Hugging Face repo id when there is a namespace."""
        return f"{self.namespace + '/' if self.namespace else ''}{self.model}"


def parse_name(name: str) -> ModelName:
    """Split and check ``name``; raises :class:`InvalidModelName`."""
    text = name
    for prefix in HUB_PREFIXES:
        if text.lower().startswith(prefix):
            text = text[len(prefix) :]
            break
    match = _NAME.fullmatch(text)
    if match is None or ".." in text:
        raise InvalidModelName(name)
    return ModelName(match.group("ns"), match.group("model"), match.group("tag") or DEFAULT_TAG)


def normalize_name(name: str) -> str:
    """``ns/model:tag`` in canonical form (tag defaults to ``latest``); raises on bad names."""
    return str(parse_name(name))
