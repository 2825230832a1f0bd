"""A managed model's manifest: which files it is made of, where it came from, and its defaults.

Pulled, created and copied models are described by one small JSON file each, so that listing and
``/api/show`` never read weights. The files themselves live once, content-addressed, in the store's
blob directory; several manifests may share them (a copy, or a model created ``FROM`` another with
a different system prompt, costs no disk).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass, field
from typing import Any

from inference.backends.base import ModelInfo

SCHEMA_VERSION = 1
DIGEST = re.compile(r"sha256[:-](?P<hex>[0-9a-f]{64})")


class InvalidDigest(ValueError):
    """Not ``sha256:<64 lowercase hex>``."""


def digest_hex(digest: str) -> str:
    """The 64 hex digits of ``sha256:HEX`` (or Ollama's ``sha256-HEX``); raises :class:`InvalidDigest`."""
    match = DIGEST.fullmatch(digest)
    if match is None:
        raise InvalidDigest(digest)
    return match.group("hex")


@dataclass
class Manifest:
    """Everything the store knows about a managed model, without its weights."""

    name: str
    files: dict[str, str]  # relative path -> "sha256:HEX"
    info: ModelInfo
    format: str = "safetensors"  # or "gguf": which kind of backend serves the files
    source: str = ""
    parent: str = ""
    parameters: dict[str, Any] = field(default_factory=dict)
    system: str | None = None
    template: str | None = None
    messages: list[dict[str, Any]] = field(default_factory=list)
    license: str | None = None
    created_at: str = ""

    @property
    def size(self) -> int:
        return self.info.size_bytes

    def to_json(self) -> bytes:
        data = asdict(self)
        data["schema_version"] = SCHEMA_VERSION
        return json.dumps(data, indent=1, sort_keys=True).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> Manifest:
        data = json.loads(raw)
        data.pop("schema_version", None)
        data["info"] = ModelInfo(**data["info"])
        return cls(**data)

    def digest(self) -> str:
        """The hex sha256 of the manifest as stored: what ``/api/tags`` reports."""
        return hashlib.sha256(self.to_json()).hexdigest()

    def files_key(self) -> str:
        """A name for this exact set of files (shared by manifests that share every file)."""
        listing = "\n".join(f"{path}\t{digest}" for path, digest in sorted(self.files.items()))
        return hashlib.sha256(listing.encode()).hexdigest()[:24]
