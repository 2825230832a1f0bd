"""Server settings, read in one place from the command line and the environment.

``TRILLM_*`` variables win; the matching ``OLLAMA_*`` variable is honoured when ours is unset, so
an existing Ollama setup keeps working.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from app.durations import parse_duration

DEFAULT_PORT = 11434


def _env(name: str) -> str | None:
    value = os.environ.get(f"TRILLM_{name}")
    if value is None or value == "":
        value = os.environ.get(f"OLLAMA_{name}")
    return value or None


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
        if context := _env("CONTEXT_LENGTH"):
            settings.context_length = int(context)
        return settings
