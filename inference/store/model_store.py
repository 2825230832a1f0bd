"""The model store: where models live on disk, and the only code that writes there.

Two kinds of model are served from ``root``:

* **plain directories** a user copied in: ``<root>/NAME`` (or ``<root>/NS/NAME``) holding a model
  some backend loads is served as ``NAME:latest``, and so is a GGUF file ``<root>/NAME.gguf``;
* **managed models** (pulled, created, copied): a manifest at ``<root>/manifests/NS/MODEL/TAG``
  lists content-addressed files in ``<root>/blobs``; ``<root>/snapshots/KEY`` is a directory of
  links to them that a backend loads like any model directory.

Models of an existing Ollama store (:mod:`inference.store.ollama_store`) are listed after these, under
Ollama's names, unless a model of the store has the same name. They are only read: deleting one is
refused, and copying or creating from one copies its GGUF into this store.

Every name goes through :func:`inference.store.names.parse_name` and every file name from outside
through :func:`safe_relative` before it is joined to ``root``, and each path is checked to stay
inside ``root``, so no request can read, write or delete anything outside the store.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import threading
import uuid
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path, PurePosixPath

from inference.backends.base import Backend, ModelInfo
from inference.store.manifest import Manifest, digest_hex
from inference.store.names import InvalidModelName, ModelName, normalize_name, parse_name
from inference.store.ollama_store import OllamaModel, OllamaStore

log = logging.getLogger("trillm.store")

__all__ = ["InvalidModelName", "ModelNotFound", "ModelStore", "StoredModel", "normalize_name"]

RESERVED = frozenset({"blobs", "manifests", "snapshots", "partial"})


class ModelNotFound(LookupError):
    """No model of that name is in the store."""


class StoreError(Exception):
    """A store operation that cannot be done as asked (the message says why)."""


class ReadOnlyModel(StoreError):
    """The model belongs to another program's store (Ollama's), which trillm never changes."""


@dataclass(frozen=True)
class StoredModel:
    """A model on disk, described without loading it."""

    name: str
    path: Path
    backend: str
    info: ModelInfo
    modified_at: datetime
    digest: str
    manifest: Manifest | None = None
    ollama: OllamaModel | None = None  # a model of the Ollama store, read-only

    @property
    def system(self) -> str | None:
        if self.ollama is not None:
            return self.ollama.system
        return self.manifest.system if self.manifest else None

    @property
    def parameters(self) -> dict[str, object]:
        if self.ollama is not None:
            return self.ollama.parameters
        return self.manifest.parameters if self.manifest else {}

    @property
    def messages(self) -> list[dict[str, object]]:
        return self.manifest.messages if self.manifest else []

    @property
    def template(self) -> str | None:
        return self.manifest.template if self.manifest else None


StoredModels = list[StoredModel]  # spelled once here: inside ModelStore, ``list`` is a method


def safe_relative(name: str) -> PurePosixPath:
    """A file name from a repo or a request, as a relative path that stays where it is put."""
    path = PurePosixPath(name)
    if (
        not name
        or "\\" in name
        or "\0" in name
        or path.is_absolute()
        or any(part in ("", ".", "..") or part.startswith(".") for part in path.parts)
        or len(name) > 255
    ):
        raise StoreError(f"unsafe file name {name!r}")
    return path


def sha256_file(path: Path) -> str:
    with path.open("rb") as file:
        return hashlib.file_digest(file, "sha256").hexdigest()


class ModelStore:
    """Finds models under ``root`` and the backend for each; adds and removes managed ones."""

    def __init__(self, root: Path, backends: list[Backend], ollama: OllamaStore | None = None) -> None:
        self.root = root
        self._backends = backends
        self._ollama = ollama
        self._cache: dict[Path, tuple[float, StoredModel]] = {}
        self._warned: set[Path] = set()
        self._manifests: dict[Path, tuple[int, StoredModel]] = {}
        self._lock = threading.Lock()  # manifests and blobs change under it (pull threads)

    # -- reading -----------------------------------------------------------------------------

    def list(self) -> StoredModels:
        models = {m.name.lower(): m for m in self._ollama_models()}
        if self.root.is_dir():
            models |= {m.name.lower(): m for m in self._plain_models()}
            models |= {m.name.lower(): m for m in self._managed_models()}
        return sorted(models.values(), key=lambda m: m.name)

    def resolve(self, name: str) -> StoredModel:
        """The model called ``name``; raises :class:`InvalidModelName` or :class:`ModelNotFound`.

        A managed model is found at its manifest's path (one cached read); only a name without a
        manifest costs a scan of the plain directories.
        """
        wanted = parse_name(name)
        file = self.manifest_path(wanted)
        managed = self._read_manifest(file) if file.is_file() else None
        if managed is not None and managed.name.lower() == wanted.key:
            return managed
        for model in [*self._plain_models(), *self._ollama_models()]:
            if model.name.lower() == wanted.key:
                return model
        raise ModelNotFound(name)

    def backend_for(self, path: Path) -> Backend | None:
        return next((b for b in self._backends if b.can_load(path)), None)

    def _plain_models(self) -> StoredModels:
        if not self.root.is_dir():
            return []
        found = []
        for entry in sorted(self.root.iterdir()):
            if entry.suffix == ".gguf" and entry.is_file() and self.backend_for(entry) is not None:
                found.append((entry.stem, entry))
                continue
            if not entry.is_dir() or entry.name.startswith(".") or entry.name in RESERVED:
                continue
            if self.backend_for(entry) is not None:
                found.append((entry.name, entry))
                continue
            for sub in sorted(entry.iterdir()):
                if sub.is_dir() and self.backend_for(sub) is not None:
                    found.append((f"{entry.name}/{sub.name}", sub))
        models, taken = [], set()
        for name, path in found:
            try:
                model = self._describe(name, path)
            except InvalidModelName:
                continue  # a directory whose name cannot be requested
            if model.name.lower() in taken and path.suffix == ".gguf":
                # A directory and a file of one name: the directory keeps it (it sorts first), the
                # file is served under its file name.
                self._warn_once(
                    path, f"{path.name} shares its name with a directory; it is listed as {path.name}"
                )
                model = replace(model, name=normalize_name(path.name))
            taken.add(model.name.lower())
            models.append(model)
        return models

    def _warn_once(self, path: Path, message: str) -> None:
        if path not in self._warned:
            self._warned.add(path)
            log.warning("model store: %s", message)

    def _describe(self, name: str, path: Path) -> StoredModel:
        files = sorted(path.iterdir()) if path.is_dir() else [path]
        mtime = max(f.stat().st_mtime for f in files)
        cached = self._cache.get(path)
        if cached is not None and cached[0] == mtime:
            return cached[1]
        backend = self.backend_for(path)
        assert backend is not None
        info = self._read_info(backend, path)
        fingerprint = hashlib.sha256()
        for file in files:
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

    @staticmethod
    def _read_info(backend: Backend, path: Path) -> ModelInfo:
        try:
            return backend.describe(path)
        except (OSError, ValueError, KeyError, TypeError) as error:
            # Still listed, so that using it gives the load error instead of "not found".
            return ModelInfo("unknown", 0, 0, "unknown", None, 0, {"error": str(error)})

    def _ollama_models(self) -> StoredModels:
        if self._ollama is None:
            return []
        models = []
        for found in self._ollama.list():
            cached = self._cache.get(found.manifest)
            if cached is not None and cached[1].ollama == found:
                models.append(cached[1])  # unchanged manifest: no file opened
                continue
            path = found.gguf if found.projector is None else (self._paired(found) or found.gguf)
            backend = self.backend_for(path)
            if backend is None:
                continue
            model = StoredModel(
                name=found.name,
                path=path,
                backend=backend.name,
                info=self._read_info(backend, path),
                modified_at=found.modified_at,
                digest=found.digest,
                ollama=found,
            )
            self._cache[found.manifest] = (0.0, model)
            models.append(model)
        return models

    def _paired(self, found: OllamaModel) -> Path | None:
        """A directory of this store linking an Ollama vision model's GGUF and its projector, the
        layout the llama.cpp backend reads a vision model from (the Ollama store is never written);
        ``None`` where this store cannot be written (the model is then served as a text model)."""
        assert found.projector is not None
        pair = self.root / "snapshots" / f"ollama-{found.digest[:32]}"
        links = {"model.gguf": found.gguf, "mmproj.gguf": found.projector}
        try:
            with self._lock:
                pair.mkdir(parents=True, exist_ok=True)
                for name, target in links.items():
                    link = pair / name
                    if link.is_symlink() and link.resolve() != target.resolve():
                        link.unlink()
                    if not link.is_symlink():
                        link.symlink_to(target)
        except OSError as error:
            self._warn_once(
                found.manifest, f"{found.name}: its projector cannot be linked ({error}); served as text only"
            )
            return None
        return pair

    def _managed_models(self) -> StoredModels:
        models = []
        manifests = self.root / "manifests"
        if not manifests.is_dir():
            return []
        for file in sorted(manifests.glob("*/*/*")):
            if file.is_file() and not file.name.startswith("."):
                model = self._read_manifest(file)
                if model is not None:
                    models.append(model)
        return models

    def _read_manifest(self, file: Path) -> StoredModel | None:
        """The model a manifest file describes (parsed once per version of the file), or None."""
        try:
            mtime = file.stat().st_mtime_ns
            cached = self._manifests.get(file)
            if cached is not None and cached[0] == mtime:
                return cached[1]
            manifest = Manifest.from_json(file.read_bytes())
            name = normalize_name(manifest.name)
        except (OSError, ValueError, KeyError, TypeError):
            return None  # a damaged or vanished manifest is skipped, not fatal
        path = self.snapshot_path(manifest)
        backend = self.backend_for(path) if path.is_dir() else None
        info = manifest.info
        if manifest.template is not None:
            info = replace(info, chat_template=manifest.template)
        model = StoredModel(
            name=name,
            path=path,
            backend=backend.name if backend else "missing",
            info=info,
            modified_at=datetime.fromtimestamp(mtime / 1e9).astimezone(),
            digest=manifest.digest(),
            manifest=manifest,
        )
        self._manifests[file] = (mtime, model)
        return model

    # -- paths -------------------------------------------------------------------------------

    def _inside(self, path: Path) -> Path:
        root = self.root.resolve()
        resolved = path.resolve() if not path.is_symlink() else path.parent.resolve() / path.name
        if resolved != root and root not in resolved.parents:
            raise StoreError(f"{path} is outside the model store")
        return path

    def manifest_path(self, name: ModelName) -> Path:
        return self._inside(
            self.root / "manifests" / (name.namespace or "_").lower() / name.model.lower() / name.tag.lower()
        )

    def blob_path(self, digest: str) -> Path:
        return self._inside(self.root / "blobs" / f"sha256-{digest_hex(digest)}")

    def snapshot_path(self, manifest: Manifest) -> Path:
        return self.root / "snapshots" / manifest.files_key()

    def partial_dir(self, key: str) -> Path:
        return self._inside(self.root / "partial" / key)

    # -- writing -----------------------------------------------------------------------------

    def has_blob(self, digest: str) -> bool:
        return self.blob_path(digest).is_file()

    def add_blob(self, source: Path, digest: str | None = None) -> str:
        """Move ``source`` into the blob directory; with ``digest``, check it first.

        Returns ``sha256:HEX``. A mismatch raises :class:`StoreError` and leaves ``source``.
        """
        actual = sha256_file(source)
        if digest is not None and digest_hex(digest) != actual:
            raise StoreError(f'digest mismatch, expected "{digest}", got "sha256:{actual}"')
        target = self.blob_path(f"sha256:{actual}")
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.exists():
            source.unlink()
        else:
            os.replace(source, target)
        return f"sha256:{actual}"

    def blob_upload_path(self) -> Path:
        """A fresh temporary file name for an upload on its way to :meth:`add_blob`."""
        folder = self.root / "partial" / "uploads"
        folder.mkdir(parents=True, exist_ok=True)
        return folder / uuid.uuid4().hex

    def describe_files(self, files: dict[str, str]) -> ModelInfo:
        """Link ``files`` (already blobs) as a model directory and describe it, before any manifest."""
        probe = Manifest(name="probe", files=files, info=ModelInfo("unknown", 0, 0, "unknown", None, 0))
        with self._lock:
            self._link_snapshot(probe)
        path = self.snapshot_path(probe)
        backend = self.backend_for(path)
        if backend is None:
            raise StoreError("no backend can load these files")
        return self._read_info(backend, path)

    def save(self, manifest: Manifest) -> StoredModel:
        """Write ``manifest`` (replacing a managed model of the same name) and its snapshot."""
        name = parse_name(manifest.name)
        manifest.name = str(name)
        for relative, digest in manifest.files.items():
            safe_relative(relative)
            if not self.has_blob(digest):
                raise StoreError(f"blob {digest} for {relative} is missing from the store")
        with self._lock:
            self._refuse_plain(name)
            self._link_snapshot(manifest)
            path = self.manifest_path(name)
            path.parent.mkdir(parents=True, exist_ok=True)
            temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex}")
            temporary.write_bytes(manifest.to_json())
            os.replace(temporary, path)
        return self.resolve(str(name))

    def copy(self, source: str, destination: str) -> StoredModel:
        model = self.resolve(source)
        target = str(parse_name(destination))
        if model.manifest is not None:
            manifest = replace(model.manifest, name=target)
        else:
            manifest = self.import_model(model, target, source=f"copy of {model.name}")
        return self.save(manifest)

    def import_model(self, model: StoredModel, name: str, *, source: str) -> Manifest:
        """A manifest called ``name`` for a model that has none (a plain directory or file, or a
        model of the Ollama store), its files copied into the blob store; defaults carried over."""
        manifest = self.import_directory(model.path, name, source=source)
        manifest.parameters = dict(model.parameters)
        manifest.system = model.system
        return manifest

    def import_directory(self, directory: Path, name: str, *, source: str = "") -> Manifest:
        """A manifest for the files of ``directory`` (or the single GGUF file it names), copied into
        the blob store (not yet saved)."""
        backend = self.backend_for(directory)
        if backend is None:
            raise StoreError(f"{directory} holds no model a backend can load")
        files = {}
        if directory.is_file():
            staging = self.blob_upload_path()
            shutil.copyfile(directory, staging)
            files["model.gguf"] = self.add_blob(staging)
        for file in sorted(directory.rglob("*")) if directory.is_dir() else []:
            relative = file.relative_to(directory).as_posix()
            if not file.is_file() or any(p.startswith(".") for p in PurePosixPath(relative).parts):
                continue
            staging = self.blob_upload_path()
            shutil.copyfile(file, staging)
            files[relative] = self.add_blob(staging)
        return Manifest(
            name=name,
            files=files,
            info=self._read_info(backend, directory),
            format="gguf" if backend.name == "llamacpp" else "safetensors",
            source=source or f"local:{directory}",
            created_at=datetime.now().astimezone().isoformat(),
        )

    def delete(self, name: str) -> None:
        """Remove the model called ``name`` (its manifest, or its plain directory)."""
        model = self.resolve(name)
        self.check_deletable(model)
        with self._lock:
            if model.manifest is None:
                path = self._inside(model.path)
                if path.is_symlink() or path.is_file():
                    path.unlink()  # a link to a model elsewhere, or a GGUF file: just that entry
                else:
                    shutil.rmtree(path)
                self._cache.pop(path, None)
                return
            file = self.manifest_path(parse_name(model.name))
            file.unlink()
            self._manifests.pop(file, None)
            self._collect(model.manifest)

    @staticmethod
    def check_deletable(model: StoredModel) -> None:
        """Raise :class:`ReadOnlyModel` for a model trillm must not delete."""
        if model.ollama is not None:
            raise ReadOnlyModel(
                f'model "{model.name}" belongs to the Ollama store ({model.ollama.manifest}), which trillm '
                f"only reads; remove it with: ollama rm {model.name}"
            )

    def _refuse_plain(self, name: ModelName) -> None:
        for model in self._plain_models():
            if model.name.lower() == name.key:
                raise StoreError(
                    f'model "{model.name}" is a directory in the store ({model.path}); remove or rename it first'
                )

    def _link_snapshot(self, manifest: Manifest) -> None:
        target = self.snapshot_path(manifest)
        if target.is_dir():
            return
        staging = self.root / "snapshots" / f".{uuid.uuid4().hex}"
        for relative, digest in manifest.files.items():
            link = staging / safe_relative(relative)
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(os.path.relpath(self.blob_path(digest), link.parent))
        staging.mkdir(parents=True, exist_ok=True)
        os.replace(staging, target)

    def _collect(self, removed: Manifest) -> None:
        """Delete the blobs and snapshot of ``removed`` that no other manifest uses."""
        remaining = [m.manifest for m in self._managed_models() if m.manifest is not None]
        used_blobs = {d for m in remaining for d in m.files.values()}
        used_snapshots = {m.files_key() for m in remaining}
        if removed.files_key() not in used_snapshots:
            shutil.rmtree(self.snapshot_path(removed), ignore_errors=True)
        for digest in set(removed.files.values()) - used_blobs:
            self.blob_path(digest).unlink(missing_ok=True)
