"""The model store: a directory of model directories, served by name.

``<store>/NAME`` (or ``<store>/NAMESPACE/NAME``) holding a model in a format some backend loads
is served as ``NAME:latest`` (and plain ``NAME``). Names follow Ollama's grammar and are matched
case-insensitively. Listing reads only small files, never weights.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from inference.backend import Backend, ModelInfo

_PART = r"[A-Za-z0-9][A-Za-z0-9._-]{0,79}"
_NAME = re.compile(rf"^(?:(?P<ns>{_PART})/)?(?P<model>{_PART})(?::(?P<tag>{_PART}))?$")


class InvalidModelName(ValueError):
    """The name is not ``[namespace/]model[:tag]``."""


class ModelNotFound(LookupError):
    """No model of that name is in the store."""


@dataclass(frozen=True)
class StoredModel:
    """A model on disk, described without loading it."""

    name: str
    path: Path
    backend: str
    info: ModelInfo
    modified_at: datetime
    digest: str


def normalize_name(name: str) -> str:
    """``ns/model:tag`` in canonical form (tag defaults to ``latest``); raises on bad names."""
    match = _NAME.match(name)
    if match is None or ".." in name:
        raise InvalidModelName(name)
    ns, model, tag = match.group("ns"), match.group("model"), match.group("tag") or "latest"
    return f"{ns + '/' if ns else ''}{model}:{tag}"


class ModelStore:
    """Finds models under ``root`` and the backend for each."""

    def __init__(self, root: Path, backends: list[Backend]) -> None:
        self.root = root
        self._backends = backends
        self._cache: dict[Path, tuple[float, StoredModel]] = {}

    def list(self) -> list[StoredModel]:
        found = []
        if not self.root.is_dir():
            return []
        for entry in sorted(self.root.iterdir()):
            if not entry.is_dir() or entry.name.startswith("."):
                continue
            if self._backend(entry) is not None:
                found.append((entry.name, entry))
                continue
            for sub in sorted(entry.iterdir()):
                if sub.is_dir() and self._backend(sub) is not None:
                    found.append((f"{entry.name}/{sub.name}", sub))
        models = []
        for name, path in found:
            try:
                models.append(self._describe(name, path))
            except InvalidModelName:
                continue  # a directory whose name cannot be requested
        return models

    def resolve(self, name: str) -> StoredModel:
        """The model called ``name``; raises :class:`InvalidModelName` or :class:`ModelNotFound`."""
        wanted = normalize_name(name).lower()
        for model in self.list():
            if model.name.lower() == wanted:
                return model
        raise ModelNotFound(name)

    def _backend(self, path: Path) -> Backend | None:
        return next((b for b in self._backends if b.can_load(path)), None)

    def _describe(self, name: str, path: Path) -> StoredModel:
        mtime = max(f.stat().st_mtime for f in path.iterdir())
        cached = self._cache.get(path)
        if cached is not None and cached[0] == mtime:
            return cached[1]
        backend = self._backend(path)
        assert backend is not None
        try:
            info = backend.describe(path)
        except (OSError, ValueError, KeyError, TypeError) as error:
            # Still listed, so that using it gives the load error instead of "not found".
            info = ModelInfo("unknown", 0, 0, "unknown", None, 0, {"error": str(error)})
        fingerprint = hashlib.sha256()
        for file in sorted(path.iterdir()):
            stat = file.stat()
            fingerprint.update(f"{file.name}:{stat.st_size}:{stat.st_mtime_ns}\n".encode())
        model = StoredModel(
            name=normalize_name(name),
            path=path,
            backend=backend.name,
            info=info,
            modified_at=datetime.fromtimestamp(mtime).astimezone(),
            digest=fingerprint.hexdigest(),
        )
        self._cache[path] = (mtime, model)
        return model
