"""Server settings, read in one place from the command line and the environment.

Every variable is declared once in :data:`VARIABLES` with its parser and help: ``TRILLM_*`` wins;
where Ollama has the same variable, ``OLLAMA_*`` is honoured when ours is unset, so an existing
Ollama setup keeps working. A bad value is an error naming the variable, never a silent default.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from app.protocol.durations import parse_duration
from validation.images import DEFAULT_MAX_PIXELS

DEFAULT_PORT = 11434
BACKENDS = ("mlx", "llamacpp")


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
    # The window a request gets without num_ctx (capped by what the model was trained for):
    # enough for Open WebUI's default tools; MLX's cache grows only as far as a prompt goes.
    context_length: int = 32768
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
    max_image_pixels: int = DEFAULT_MAX_PIXELS  # an image decoding to more pixels than this: 400
    distributed_pipeline: bool = False  # --distributed: pipeline parallel instead of tensor parallel
    distributed_port: int = 32323  # --distributed across machines: the ring's first port
    distributed_timeout: float = (
        60.0  # --distributed: a step the other ranks do not finish in this loses them
    )

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
        """Settings from the environment (and ``--host`` / ``--models``, which win); a bad value
        raises :class:`SettingsError` naming the variable."""
        settings = cls()
        for variable in VARIABLES:
            raw = variable.read()
            if raw is None:
                continue
            try:
                value = variable.parse(raw)
            except ValueError as error:
                raise SettingsError(f"{variable.source()}={raw!r}: {error}") from None
            variable.apply(settings, value)
        if host:
            settings.host, settings.port = parse_host(host)
        if models:
            settings.models = Path(models).expanduser()
        if settings.ollama_models is None and os.environ.get("TRILLM_OLLAMA_MODELS") is None:
            default = Path.home() / ".ollama" / "models"  # an existing Ollama store, unless set to ""
            settings.ollama_models = default if default.is_dir() else None
        return settings


class SettingsError(ValueError):
    """A configuration value that cannot be used; the message names the variable."""


def _integer(minimum: int) -> Callable[[str], int]:
    def parse(raw: str) -> int:
        try:
            value = int(raw.strip())
        except ValueError:
            raise ValueError("expected a whole number") from None
        if value < minimum:
            raise ValueError(f"expected a whole number of at least {minimum}")
        return value

    return parse


def _flag(raw: str) -> bool:
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ValueError("expected 1/true/yes/on or 0/false/no/off")


def _seconds(raw: str) -> float:
    return parse_duration(raw, bare_number_is_seconds=True)


def _choice(*choices: str) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        value = raw.strip().lower()
        if value not in choices:
            raise ValueError(f"expected one of {', '.join(choices)}")
        return value

    return parse


def _path(raw: str) -> Path:
    return Path(raw).expanduser()


def _list(raw: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in raw.split(",") if item.strip())


@dataclass(frozen=True)
class Variable:
    """One environment variable: ``TRILLM_<name>`` always, ``OLLAMA_<name>`` as the fallback where
    Ollama has the same variable (so an existing Ollama setup keeps working)."""

    name: str
    attribute: str
    parse: Callable[[str], Any]
    help: str
    ollama: bool = False
    apply_value: Callable[[Settings, Any], None] | None = None
    shown_default: str | None = None  # where the attribute's default does not read as the variable's

    def names(self) -> tuple[str, ...]:
        return (f"TRILLM_{self.name}", f"OLLAMA_{self.name}") if self.ollama else (f"TRILLM_{self.name}",)

    def source(self) -> str:
        """The variable the value was read from."""
        return next((n for n in self.names() if os.environ.get(n)), self.names()[0])

    def read(self) -> str | None:
        """The first non-empty value among :meth:`names`."""
        return next((os.environ[n] for n in self.names() if os.environ.get(n)), None)

    def apply(self, settings: Settings, value: Any) -> None:
        if self.apply_value is not None:
            self.apply_value(settings, value)
        else:
            setattr(settings, self.attribute, value)

    def default(self) -> str:
        """The default as the help shows it."""
        if self.shown_default is not None:
            return self.shown_default
        value = getattr(Settings(), self.attribute)
        if isinstance(value, bool):
            return "1" if value else "0"
        if isinstance(value, tuple):
            return ",".join(value) or "(none)"
        return "(unset)" if value is None else str(value)


def _set_host(settings: Settings, value: tuple[str, int]) -> None:
    settings.host, settings.port = value


def _host(raw: str) -> tuple[str, int]:
    try:
        return parse_host(raw)
    except ValueError:
        raise ValueError("expected host[:port]") from None


def _set_loaded(settings: Settings, value: int) -> None:
    settings.max_loaded_models = value or 3  # 0 means "auto" to Ollama


def _invert(attribute: str) -> Callable[[Settings, bool], None]:
    def apply(settings: Settings, value: bool) -> None:
        setattr(settings, attribute, not value)

    return apply


def _set_ollama_store(settings: Settings, value: Path) -> None:
    settings.ollama_models = value if str(value) not in ("", ".") else None


VARIABLES: tuple[Variable, ...] = (
    Variable(
        "HOST",
        "host",
        _host,
        "address to listen on (and the CLI's server)",
        True,
        _set_host,
        f"127.0.0.1:{DEFAULT_PORT}",
    ),
    Variable("MODELS", "models", _path, "the model store", True, shown_default="~/.trillm/models"),
    Variable("KEEP_ALIVE", "keep_alive", _seconds, "how long an idle model stays loaded (s or 5m)", True),
    Variable(
        "CONTEXT_LENGTH",
        "context_length",
        _integer(16),
        "default context window (tokens), capped by the model's",
        True,
    ),
    Variable("NUM_PARALLEL", "num_parallel", _integer(1), "sequences of one model decoding together", True),
    Variable(
        "MAX_LOADED_MODELS", "max_loaded_models", _integer(0), "models in memory at once", True, _set_loaded
    ),
    Variable("MAX_QUEUE", "max_queue", _integer(0), "requests waiting before 503", True),
    Variable("ORIGINS", "origins", _list, "extra CORS origins, comma-separated", True),
    Variable("API_KEY", "api_key", str, "require this key (Authorization: Bearer KEY)"),
    Variable(
        "ALLOW_INSECURE_BIND", "allow_insecure_bind", _flag, "serve a non-loopback address without a key"
    ),
    Variable(
        "DISABLE_MANAGEMENT",
        "management",
        _flag,
        "turn pull/create/copy/delete off",
        apply_value=_invert("management"),
        shown_default="0",
    ),
    Variable("METRICS", "metrics", _flag, "serve Prometheus metrics at /metrics"),
    Variable("MAX_BODY_BYTES", "max_body_bytes", _integer(1), "largest request body"),
    Variable("MAX_IMAGE_PIXELS", "max_image_pixels", _integer(1), "most pixels an image may decode to"),
    Variable("MAX_HEADERS", "max_headers", _integer(1), "most request headers (431 beyond)"),
    Variable("HEADER_TIMEOUT", "header_timeout", _seconds, "seconds to send request headers"),
    Variable("BODY_TIMEOUT", "body_timeout", _seconds, "seconds to send a request body"),
    Variable("SHUTDOWN_GRACE", "shutdown_grace", _seconds, "seconds streams get on shutdown"),
    Variable(
        "PREFIX_CACHE", "prefix_cache_entries", _integer(0), "finished KV caches kept per model (0: off)"
    ),
    Variable("PREFIX_CACHE_MB", "prefix_cache_mb", _integer(0), "memory those caches may hold, per model"),
    Variable("BACKEND", "backend", _choice(*BACKENDS), "preferred backend where both could serve"),
    Variable(
        "OLLAMA_MODELS",
        "ollama_models",
        _path,
        'an Ollama store served read-only ("": none)',
        apply_value=_set_ollama_store,
        shown_default="~/.ollama/models if it exists",
    ),
    Variable("NUM_THREAD", "num_thread", _integer(1), "llama.cpp CPU threads (default: half the cores)"),
    Variable("MLX_OPENBLAS", "mlx_openblas", _flag, "Linux: MLX's float32 products on OpenBLAS"),
    Variable(
        "DISTRIBUTED_PIPELINE", "distributed_pipeline", _flag, "--distributed: pipeline, not tensor, parallel"
    ),
    Variable("DISTRIBUTED_PORT", "distributed_port", _integer(1), "--distributed: the ring's first port"),
    Variable(
        "DISTRIBUTED_TIMEOUT",
        "distributed_timeout",
        _seconds,
        "--distributed: seconds before a silent rank is lost",
    ),
)

HOST = VARIABLES[0]


def environment_help() -> str:
    """The variables with their defaults, for ``trillm serve --help``."""
    rows = [(" / ".join(v.names()), v.default(), v.help) for v in VARIABLES]
    width = max(len(name) for name, _, _ in rows)
    lines = [f"  {name:<{width}}  {text} [default: {default}]" for name, default, text in rows]
    return "environment variables (TRILLM_* wins over OLLAMA_*):\n" + "\n".join(lines)
