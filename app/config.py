"""Server settings, read in one place from the command line and the environment.

``TRILLM_*`` variables win; the matching ``OLLAMA_*`` variable is honoured when ours is unset, so
an existing Ollama setup keeps working.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from app.protocol.durations import parse_duration

DEFAULT_PORT = 11434
BACKENDS = ("mlx", "llamacpp")


def _env(name: str) -> str | None:
    value = os.environ.get(f"TRILLM_{name}")
    if value is None or value == "":
        value = os.environ.get(f"OLLAMA_{name}")
    return value or None


def _flag(name: str, default: bool = False) -> bool:
    """An on/off setting: 1/true/yes/on or 0/false/no/off; anything else (unset too) is ``default``."""
    value = os.environ.get(name, "").strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    return default


def parse_host(value: str) -> tuple[str, int]:
    """``host[:port]`` with an optional ``http://`` prefix, as ``OLLAMA_HOST`` accepts."""
    value = value.strip()
    for scheme in ("http://", "https://"):
        if value.startswith(scheme):
            value = value[len(scheme) :]
    value = value.rstrip("/")
    if value.startswith("["):  # [::1]:port
        host, _, rest = value[1:].partition("]")
        port = rest.lstrip(":")
        return host, int(port) if port else DEFAULT_PORT
    host, sep, port = value.rpartition(":")
    if not sep:
        return value or "127.0.0.1", DEFAULT_PORT
    return host or "127.0.0.1", int(port)


@dataclass
class Settings:
    """Everything configurable about a running server."""

    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    models: Path = field(default_factory=lambda: Path.home() / ".trillm" / "models")
    keep_alive: float = 300.0
    max_queue: int = 512
    max_body_bytes: int = 16 * 1024 * 1024
    origins: tuple[str, ...] = ()
    context_length: int = 4096
    max_loaded_models: int = 3  # Ollama's default on one GPU
    num_parallel: int = 4  # sequences of one model decoding together (see the README)
    prefix_cache_entries: int = 16  # finished sequences whose KV cache is kept per model; 0: off
    prefix_cache_mb: int = 2048  # and the most memory they may hold, per model
    api_key: str | None = None
    allow_insecure_bind: bool = False  # serve a non-loopback address without an API key
    management: bool = True  # pull, create, copy, delete and blob uploads
    metrics: bool = False  # GET /metrics (Prometheus)
    max_headers: int = 100  # more request headers than this get 431
    header_timeout: float = 30.0  # a connection must send its request headers within this
    body_timeout: float = 60.0  # and its body within this once the headers are in
    shutdown_grace: float = 5.0  # on SIGTERM, open connections get this long before they are cut
    backend: str | None = None  # "mlx" or "llamacpp": preferred where both could serve a model
    ollama_models: Path | None = None  # an Ollama store whose models are served read-only
    num_thread: int | None = None  # llama.cpp CPU threads (None: half the cores)
    mlx_openblas: bool = True  # Linux: MLX's float32 matrix products on NumPy's OpenBLAS

    def exposed(self) -> bool:
        """Whether the bind address is reachable from other machines."""
        from app.edge.security import is_loopback

        return not is_loopback(self.host)

    def public(self) -> dict[str, object]:
        """The effective configuration, for the log line users paste into bug reports."""
        out = {key: value for key, value in vars(self).items() if key != "api_key"}
        out["api_key"] = "set" if self.api_key else "unset"
        out["models"] = str(self.models)
        out["ollama_models"] = str(self.ollama_models) if self.ollama_models else None
        return out

    @classmethod
    def from_env(cls, host: str | None = None, models: str | None = None) -> Settings:
        settings = cls()
        address = host or _env("HOST")
        if address:
            settings.host, settings.port = parse_host(address)
        store = models or _env("MODELS")
        if store:
            settings.models = Path(store).expanduser()
        keep_alive = _env("KEEP_ALIVE")
        if keep_alive:
            settings.keep_alive = parse_duration(keep_alive, bare_number_is_seconds=True)
        if queue := _env("MAX_QUEUE"):
            settings.max_queue = int(queue)
        if body := os.environ.get("TRILLM_MAX_BODY_BYTES"):
            settings.max_body_bytes = int(body)
        if origins := _env("ORIGINS"):
            settings.origins = tuple(o.strip() for o in origins.split(",") if o.strip())
        if loaded := _env("MAX_LOADED_MODELS"):
            settings.max_loaded_models = int(loaded) or 3  # 0 means "auto" to Ollama
        if parallel := _env("NUM_PARALLEL"):
            settings.num_parallel = max(1, int(parallel))
        if entries := os.environ.get("TRILLM_PREFIX_CACHE"):
            settings.prefix_cache_entries = max(0, int(entries))
        if megabytes := os.environ.get("TRILLM_PREFIX_CACHE_MB"):
            settings.prefix_cache_mb = max(0, int(megabytes))
        settings.api_key = os.environ.get("TRILLM_API_KEY") or None
        settings.allow_insecure_bind = _flag("TRILLM_ALLOW_INSECURE_BIND")
        settings.management = not _flag("TRILLM_DISABLE_MANAGEMENT")
        settings.metrics = _flag("TRILLM_METRICS")
        for name, attribute in (
            ("HEADER_TIMEOUT", "header_timeout"),
            ("BODY_TIMEOUT", "body_timeout"),
            ("SHUTDOWN_GRACE", "shutdown_grace"),
        ):
            if value := os.environ.get(f"TRILLM_{name}"):
                setattr(settings, attribute, parse_duration(value, bare_number_is_seconds=True))
        if headers := os.environ.get("TRILLM_MAX_HEADERS"):
            settings.max_headers = int(headers)
        if context := _env("CONTEXT_LENGTH"):
            settings.context_length = int(context)
        if backend := os.environ.get("TRILLM_BACKEND"):
            settings.backend = backend.strip().lower()
            if settings.backend not in BACKENDS:
                raise ValueError(f"TRILLM_BACKEND must be one of {', '.join(BACKENDS)}, not {backend!r}")
        ollama = os.environ.get("TRILLM_OLLAMA_MODELS")
        if ollama:
            settings.ollama_models = Path(ollama).expanduser()
        elif ollama is None and (Path.home() / ".ollama" / "models").is_dir():
            settings.ollama_models = Path.home() / ".ollama" / "models"
        if threads := os.environ.get("TRILLM_NUM_THREAD"):
            settings.num_thread = max(1, int(threads))
        settings.mlx_openblas = _flag("TRILLM_MLX_OPENBLAS", default=True)
        return settings
