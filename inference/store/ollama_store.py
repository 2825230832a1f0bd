"""Reading an existing Ollama model store, so the models a user already pulled are served as-is.

Ollama keeps ``<root>/manifests/HOST/NAMESPACE/MODEL/TAG`` (OCI-style JSON listing layers by
digest) and the layers in ``<root>/blobs/sha256-HEX``. The ``application/vnd.ollama.image.model``
layer is a GGUF file; the ``params`` layer holds default options, the ``system`` layer a system
prompt, and a vision model's ``projector`` layer its mmproj GGUF. Ollama's own ``template`` layer is a Go template, which trillm does not run: the GGUF's
Jinja ``tokenizer.chat_template`` is used instead.

Everything here only reads. Names follow Ollama's: ``registry.ollama.ai/library/llama3.2:1b`` is
``llama3.2:1b``; another namespace keeps it (``ns/model:tag``); Hugging Face models pulled by Ollama
(``hf.co/ORG/REPO:QUANT``) are ``ORG/REPO:QUANT``. Models of other registries are not served.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from inference.store.manifest import InvalidDigest, digest_hex
from inference.store.names import InvalidModelName, normalize_name

DEFAULT_REGISTRY = "registry.ollama.ai"
HUGGING_FACE = ("hf.co", "huggingface.co")
MODEL_LAYER = "application/vnd.ollama.image.model"
PARAMS_LAYER = "application/vnd.ollama.image.params"
SYSTEM_LAYER = "application/vnd.ollama.image.system"
PROJECTOR_LAYER = "application/vnd.ollama.image.projector"  # a vision model's mmproj (a GGUF)
SMALL_LAYER_LIMIT = 1 << 20  # params and system layers are read only up to this size


@dataclass(frozen=True)
class OllamaModel:
    """One tagged model of an Ollama store: where its GGUF is and its defaults."""

    name: str
    manifest: Path
    gguf: Path
    digest: str  # the manifest's sha256, as Ollama reports it
    modified_at: datetime
    parameters: dict[str, Any]
    system: str | None
    projector: Path | None = None  # a vision model's projector GGUF (llava and its kin)


def ollama_name(host: str, namespace: str, model: str, tag: str) -> str | None:
    """The name trillm serves a manifest under, or None for registries it does not name."""
    if host == DEFAULT_REGISTRY:
        name = f"{model}:{tag}" if namespace == "library" else f"{namespace}/{model}:{tag}"
    elif host in HUGGING_FACE:
        name = f"{namespace}/{model}:{tag}"
    else:
        return None
    try:
        return normalize_name(name)
    except InvalidModelName:
        return None


class OllamaStore:
    """The models of the Ollama store at ``root`` (read-only)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._cache: dict[Path, tuple[int, OllamaModel | None]] = {}

    def list(self) -> list[OllamaModel]:
        manifests = self.root / "manifests"
        if not manifests.is_dir():
            return []
        found = []
        for file in sorted(manifests.glob("*/*/*/*")):
            if file.is_file() and not file.name.startswith("."):
                model = self._read(file)
                if model is not None:
                    found.append(model)
        return found

    def _read(self, file: Path) -> OllamaModel | None:
        try:
            mtime = file.stat().st_mtime_ns
        except OSError:
            return None
        cached = self._cache.get(file)
        if cached is not None and cached[0] == mtime:
            return cached[1]
        model = self._parse(file, mtime)
        self._cache[file] = (mtime, model)
        return model

    def _parse(self, file: Path, mtime: int) -> OllamaModel | None:
        tag, model_dir = file.name, file.parent
        name = ollama_name(model_dir.parent.parent.name, model_dir.parent.name, model_dir.name, tag)
        if name is None:
            return None
        try:
            raw = file.read_bytes()
            layers = json.loads(raw).get("layers", [])
            by_type = {layer["mediaType"]: self._blob(layer["digest"]) for layer in layers}
        except (OSError, ValueError, KeyError, TypeError, AttributeError, InvalidDigest):
            return None  # a damaged manifest is skipped, as Ollama skips it
        gguf = by_type.get(MODEL_LAYER)
        if gguf is None or not gguf.is_file():
            return None
        return OllamaModel(
            name=name,
            manifest=file,
            gguf=gguf,
            digest=hashlib.sha256(raw).hexdigest(),
            modified_at=datetime.fromtimestamp(mtime / 1e9).astimezone(),
            parameters=_small_json(by_type.get(PARAMS_LAYER)),
            system=_small_text(by_type.get(SYSTEM_LAYER)),
            projector=projector
            if (projector := by_type.get(PROJECTOR_LAYER)) and projector.is_file()
            else None,
        )

    def _blob(self, digest: str) -> Path:
        return self.root / "blobs" / f"sha256-{digest_hex(digest)}"


def _small_text(path: Path | None) -> str | None:
    if path is None or not path.is_file() or path.stat().st_size > SMALL_LAYER_LIMIT:
        return None
    return path.read_text(errors="replace")


def _small_json(path: Path | None) -> dict[str, Any]:
    text = _small_text(path)
    try:
        value = json.loads(text) if text else {}
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}
