"""Pulling a model from the Hugging Face Hub into the store, with Ollama-shaped progress.

A name such as ``mlx-community/Qwen3-0.6B-4bit`` (or ``hf.co/...``) is a Hub repo id: an MLX repo
is pulled whole; from a GGUF repo, the tag picks the quantisation (``hf.co/ORG/REPO:Q4_K_M``, as
Ollama reads it) and only that GGUF file is pulled. The repo's
file list comes from ``huggingface_hub`` (which honours ``HF_ENDPOINT`` and ``HF_TOKEN``), and
each file is fetched with its ``http_get`` into ``<store>/partial/...``, appending to what an
earlier, interrupted pull left there (a ``Range`` request), so a pull resumes where it stopped.
Every file is checked against the digest the Hub lists (sha256 for LFS files, the git blob id for
the rest) before it is moved into the blob store; only then is the manifest written, so a failed
pull never leaves a half-registered model.

This runs on a worker thread: it blocks, reports through ``report`` and stops (keeping what it
has downloaded) soon after ``should_stop`` turns true.
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from fnmatch import fnmatch
from pathlib import Path, PurePosixPath
from typing import Any, cast

from inference.failures import FailureKind
from inference.store.manifest import Manifest
from inference.store.model_store import ModelNotFound, ModelStore, StoredModel, StoreError, safe_relative
from inference.store.names import ModelName, parse_name

# What a model directory needs, as mlx-lm downloads it (remote code is never fetched).
MLX_FILES = ("*.json", "*.safetensors", "tokenizer.model", "*.tiktoken", "*.txt", "*.jinja")
PREFERRED_QUANTS = ("Q4_K_M", "Q4_K_S", "Q5_K_M", "Q6_K", "Q8_0", "Q4_0", "F16", "BF16")
PROJECTOR_PRECISIONS = ("F16", "BF16", "F32", "Q8_0")
_SHARD = re.compile(r"-\d{5}-of-\d{5}\.gguf$", re.IGNORECASE)
REPORT_EVERY = 0.06  # seconds between progress lines per file, as Ollama paces them
_COMMIT = re.compile(r"[0-9a-f]{40}")
_locks: dict[str, threading.Lock] = {}
_locks_guard = threading.Lock()


class PullError(Exception):
    """A pull that cannot complete; the message is for the user, ``kind`` says why."""

    def __init__(self, message: str, kind: FailureKind = FailureKind.INTERNAL) -> None:
        super().__init__(message)
        self.kind = kind


class PullCancelled(Exception):
    """The client went away; what was downloaded stays for the next pull."""


@dataclass(frozen=True)
class PullProgress:
    """One progress line: ``{"status", "digest"?, "total"?, "completed"?}``."""

    status: str
    digest: str | None = None
    total: int | None = None
    completed: int | None = None


@dataclass
class RemoteFile:
    """A file of the repo, with what its content must hash to."""

    name: str
    size: int
    sha256: str | None  # LFS files
    blob_id: str | None  # git object id (sha1 of "blob N\\0" + content) for the others

    @property
    def label(self) -> str:
        """The digest shown in progress lines."""
        return f"sha256:{self.sha256}" if self.sha256 else f"sha1:{self.blob_id or ''}"


@dataclass
class _Plan:
    repo: str
    commit: str
    files: list[RemoteFile] = field(default_factory=list)


Report = Callable[[PullProgress], None]


def pull_model(
    store: ModelStore,
    name: str,
    report: Report,
    should_stop: Callable[[], bool] = lambda: False,
    *,
    endpoint: str | None = None,
    token: str | None = None,
) -> StoredModel:
    """Download ``name`` into ``store``; raises :class:`PullError` or :class:`PullCancelled`.

    A model already in the store (pulled, copied in or Ollama's) is a success at once, as in
    Ollama, without asking the hub: scripts that pull before use keep working offline.
    """
    try:
        existing = store.resolve(name)
    except ModelNotFound:
        pass
    else:
        report(PullProgress("success"))
        return existing
    wanted = parse_name(name)
    if wanted.namespace is None:
        raise PullError(
            f'"{wanted.model}" is not a Hugging Face repo id; pull ORG/REPO, '
            "for example mlx-community/Qwen3-0.6B-4bit",
            FailureKind.INVALID_REQUEST,
        )
    endpoint = (endpoint or os.environ.get("HF_ENDPOINT") or "https://huggingface.co").rstrip("/")
    report(PullProgress("pulling manifest"))
    with _repo_lock(wanted.repo.lower()):
        plan = _plan(wanted, endpoint, token)
        _check_space(store, plan)
        staging = store.partial_dir(f"{plan.repo.replace('/', '--')}--{plan.commit}")
        fetched: dict[str, Path] = {}
        for remote in plan.files:
            if should_stop():
                raise PullCancelled()
            if remote.sha256 and store.has_blob(f"sha256:{remote.sha256}"):
                report(PullProgress(_status(remote), remote.label, remote.size, remote.size))
                continue
            fetched[remote.name] = _download(plan, remote, staging, endpoint, token, report, should_stop)
        report(PullProgress("verifying sha256 digest"))
        files = {}
        for remote in plan.files:
            # A GGUF in a folder of the repo (``Q4_K_M/model-00001-of-00002.gguf``) lands at the
            # top of the model directory, where the backend looks; MLX files are top-level anyway.
            local = PurePosixPath(remote.name).name
            if remote.name in fetched:
                files[local] = _verify_and_store(store, remote, fetched[remote.name])
            else:
                files[local] = f"sha256:{remote.sha256}"
        report(PullProgress("writing manifest"))
        manifest = Manifest(
            name=str(wanted),
            files=files,
            info=store.describe_files(files),
            format="gguf" if any(n.lower().endswith(".gguf") for n in files) else "safetensors",
            source=f"hf.co/{plan.repo}@{plan.commit}",
            created_at=datetime.now().astimezone().isoformat(),
        )
        try:
            stored = store.save(manifest)
        except StoreError as error:
            raise PullError(str(error), FailureKind.INVALID_REQUEST) from error
        shutil.rmtree(staging, ignore_errors=True)
    report(PullProgress("success"))
    return stored


def _plan(wanted: ModelName, endpoint: str, token: str | None) -> _Plan:
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError, RevisionNotFoundError

    try:
        info = HfApi(endpoint=endpoint, token=token).model_info(wanted.repo, files_metadata=True)
    except (RepositoryNotFoundError, RevisionNotFoundError) as error:
        raise PullError(
            f"pull model manifest: file does not exist ({wanted.repo} is not a model repo on {endpoint}"
            " that this token can read)",
            FailureKind.NOT_FOUND,
        ) from error
    except HfHubHTTPError as error:
        raise PullError(f"pull model manifest: {error}", FailureKind.UPSTREAM) from error
    except Exception as error:  # connection errors, from whichever HTTP library the hub client uses
        raise PullError(
            f"pull model manifest: cannot reach {endpoint}: {error}", FailureKind.UPSTREAM
        ) from error
    commit = str(info.sha or "")
    if not _COMMIT.fullmatch(commit):
        commit = hashlib.sha256(commit.encode()).hexdigest()[:40]
    siblings = info.siblings or []
    remotes = [
        RemoteFile(
            name=s.rfilename,
            size=int(s.lfs.size if s.lfs else (s.size or 0)),
            sha256=s.lfs.sha256 if s.lfs else None,
            blob_id=s.blob_id,
        )
        for s in siblings
    ]
    names = {r.name for r in remotes}
    plan = _Plan(repo=str(info.id or wanted.repo), commit=commit)
    has_weights = any(fnmatch(n, "*.safetensors") for n in names)
    ggufs = [r for r in remotes if r.name.lower().endswith(".gguf") and "mmproj" not in r.name.lower()]
    if "config.json" in names and has_weights and (wanted.tag == "latest" or not ggufs):
        if wanted.tag != "latest":
            raise PullError(
                f"{wanted.repo} holds safetensors weights; a tag ({wanted.tag!r}) only selects a GGUF "
                "quantisation. Pull it without a tag.",
                FailureKind.INVALID_REQUEST,
            )
        plan.files = [r for r in remotes if "/" not in r.name and any(fnmatch(r.name, p) for p in MLX_FILES)]
    elif ggufs:
        plan.files = _gguf_files(wanted, ggufs) + _projector(remotes)
    else:
        raise PullError(
            f"{wanted.repo} is not an MLX or GGUF model: it has no config.json with *.safetensors "
            "weights and no .gguf file",
            FailureKind.INVALID_REQUEST,
        )
    for remote in plan.files:
        try:
            safe_relative(remote.name)
        except StoreError as error:
            raise PullError(
                f"{wanted.repo} lists a file trillm will not write: {error}", FailureKind.INVALID_REQUEST
            ) from error
    return plan


def _projector(remotes: list[RemoteFile]) -> list[RemoteFile]:
    """A vision model's projector (``mmproj*.gguf``), pulled beside its GGUF as Ollama pairs
    them: the F16 one where the repo has several, as llama-server's ``-hf`` picks."""
    projectors = sorted(
        (r for r in remotes if "mmproj" in r.name.lower() and r.name.lower().endswith(".gguf")),
        key=lambda r: r.name,
    )
    for precision in PROJECTOR_PRECISIONS:
        found = [r for r in projectors if _quant_pattern(precision).search(r.name)]
        if found:
            return found[:1]
    return projectors[:1]


def _quant_pattern(quant: str) -> re.Pattern[str]:
    """``Q4_K_M`` as a whole word of a file name (not the start of ``Q4_K_M_L`` or ``Q4_0_4_4``)."""
    return re.compile(rf"(?<![A-Za-z0-9]){re.escape(quant)}(?![A-Za-z0-9_])", re.IGNORECASE)


def _gguf_files(wanted: ModelName, ggufs: list[RemoteFile]) -> list[RemoteFile]:
    """The GGUF file (every shard of it, when split) of the quantisation the tag names.

    Without a tag, Q4_K_M as Ollama picks, else the first of :data:`PREFERRED_QUANTS` present,
    else the first file.
    """
    ggufs = sorted(ggufs, key=lambda r: r.name)
    if wanted.tag.lower() != "latest":
        matching = [r for r in ggufs if _quant_pattern(wanted.tag).search(r.name)]
        if not matching:
            available = ", ".join(r.name for r in ggufs[:12])
            raise PullError(
                f"{wanted.repo} has no GGUF file of quantisation {wanted.tag!r}; its GGUF files: {available}",
                FailureKind.NOT_FOUND,
            )
    else:
        matching = next(
            (
                found
                for q in PREFERRED_QUANTS
                if (found := [r for r in ggufs if _quant_pattern(q).search(r.name)])
            ),
            ggufs,
        )
    first = matching[0]
    shard = _SHARD.search(first.name)
    if shard is None:
        return [first]
    prefix = first.name[: shard.start()]
    return [r for r in matching if r.name.startswith(prefix) and _SHARD.search(r.name)]


def _check_space(store: ModelStore, plan: _Plan) -> None:
    needed = sum(r.size for r in plan.files if not (r.sha256 and store.has_blob(f"sha256:{r.sha256}")))
    store.root.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(store.root).free
    if needed > free:
        raise PullError(
            f"not enough disk space in {store.root}: this pull needs {needed / 1e9:.2f} GB, "
            f"{free / 1e9:.2f} GB are free",
            FailureKind.NO_SPACE,
        )


def _status(remote: RemoteFile) -> str:
    return f"pulling {(remote.sha256 or remote.blob_id or '')[:12]}"


class _Bar:
    """What ``http_get`` drives as its progress bar: turns updates into throttled reports."""

    def __init__(
        self, remote: RemoteFile, report: Report, should_stop: Callable[[], bool], **kwargs: Any
    ) -> None:
        self._remote = remote
        self._report = report
        self._should_stop = should_stop
        self.n = int(kwargs.get("initial") or 0)
        self._last = 0.0

    def __enter__(self) -> _Bar:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def update(self, n: int = 1) -> None:
        if self._should_stop():
            raise PullCancelled()
        self.n += n
        now = time.monotonic()
        if now - self._last >= REPORT_EVERY:
            self._last = now
            self.emit()

    def emit(self) -> None:
        remote = self._remote
        self._report(PullProgress(_status(remote), remote.label, remote.size, min(self.n, remote.size)))

    def close(self) -> None:
        return None


def _download(
    plan: _Plan,
    remote: RemoteFile,
    staging: Path,
    endpoint: str,
    token: str | None,
    report: Report,
    should_stop: Callable[[], bool],
) -> Path:
    from huggingface_hub import hf_hub_url
    from huggingface_hub.file_download import http_get
    from huggingface_hub.utils import build_hf_headers  # type: ignore[attr-defined]

    target = staging / safe_relative(remote.name)
    target.parent.mkdir(parents=True, exist_ok=True)
    url = hf_hub_url(plan.repo, remote.name, revision=plan.commit, endpoint=endpoint)
    bar = functools.partial(_Bar, remote, report, should_stop)
    with target.open("ab") as file:
        if file.tell() > remote.size:
            file.truncate(0)
        resumed = file.tell()
        report(PullProgress(_status(remote), remote.label, remote.size, resumed))
        try:
            http_get(
                url,
                file,
                resume_size=resumed,
                headers=build_hf_headers(token=token),
                expected_size=remote.size,
                tqdm_class=cast(Any, bar),
            )
        except PullCancelled:
            raise
        except Exception as error:  # network and HTTP errors, whichever library raised them
            raise PullError(
                f"downloading {remote.name} failed: {error} (what was downloaded is kept; pull again to resume)",
                FailureKind.UPSTREAM,
            ) from error
    report(PullProgress(_status(remote), remote.label, remote.size, remote.size))
    return target


def _verify_and_store(store: ModelStore, remote: RemoteFile, path: Path) -> str:
    if remote.sha256:
        try:
            return store.add_blob(path, f"sha256:{remote.sha256}")
        except StoreError as error:
            path.unlink(missing_ok=True)
            raise PullError(
                f"{remote.name} is corrupt: {error}; the damaged download was removed, pull again",
                FailureKind.UPSTREAM,
            ) from error
    if remote.blob_id:

        def git_blob() -> Any:  # git's object id: sha1 of "blob SIZE\0" and the content
            digest = hashlib.sha1(usedforsecurity=False)
            digest.update(f"blob {path.stat().st_size}\0".encode())
            return digest

        with path.open("rb") as file:
            digest = hashlib.file_digest(file, git_blob)
        if digest.hexdigest() != remote.blob_id:
            path.unlink(missing_ok=True)
            raise PullError(
                f"{remote.name} is corrupt: digest mismatch, expected git blob {remote.blob_id}, "
                f"got {digest.hexdigest()}; the damaged download was removed, pull again",
                FailureKind.UPSTREAM,
            )
    return store.add_blob(path)


def _repo_lock(key: str) -> threading.Lock:
    with _locks_guard:
        return _locks.setdefault(key, threading.Lock())
