"""Building the app and serving it with Hypercorn's Trio worker.

The engine runs in the app's lifespan nursery: it is started (and ready) before Hypercorn accepts
the first connection, and cancelled on shutdown, which unloads every model.
"""

from __future__ import annotations

import json
import logging
import signal
from collections.abc import Awaitable, Callable

import trio
from hypercorn.config import Config
from hypercorn.trio import serve as hypercorn_serve
from quart_trio import QuartTrio

from app.config import Settings
from app.edge import connection_timeouts, security, unread_body
from app.protocol import openapi
from app.protocol.errors import install_error_handlers
from app.routes import (
    anthropic_messages,
    embeddings,
    health,
    job_responses,
    openai_chat,
    openai_completions,
    openai_models,
    openai_responses,
)
from app.routes import management as manage
from app.routes import model_info as models
from app.routes import ollama_chat as chat
from app.routes import ollama_generate as generate
from app.services import Services
from inference.backends.base import Backend
from inference.backends.mlx.distributed.group import Ranks
from inference.engine.scheduler import Engine
from inference.store.model_store import ModelStore
from inference.store.ollama_store import OllamaStore

log = logging.getLogger("trillm")


def default_backends(settings: Settings, ranks: Ranks | None = None) -> list[Backend]:
    """MLX and llama.cpp, in the order that picks the backend for a model both could serve:
    ``TRILLM_BACKEND`` when set; else MLX on Apple Silicon, llama.cpp elsewhere when installed.
    With a distributed group (``ranks``), MLX text models are sharded across it and MLX comes
    first."""
    import importlib.util
    import platform

    from inference.backends.llamacpp.backend import LlamaCppBackend, LlamaCppSettings
    from inference.backends.mlx.backend import CacheSettings, MlxBackend
    from inference.backends.mlx.distributed.sharded import ShardedMlxBackend

    cache = CacheSettings(entries=settings.prefix_cache_entries, max_bytes=settings.prefix_cache_mb << 20)
    mlx = (
        MlxBackend(cache, openblas=settings.mlx_openblas)
        if ranks is None
        else ShardedMlxBackend(ranks, cache, openblas=settings.mlx_openblas)
    )
    llamacpp = LlamaCppBackend(
        LlamaCppSettings(
            settings.context_length,
            settings.num_thread,
            settings.num_parallel,
            prefix_cache=settings.prefix_cache_entries > 0,
        )
    )
    preferred = settings.backend if ranks is None else "mlx"
    if preferred is None:
        apple = platform.system() == "Darwin" and platform.machine() == "arm64"
        installed = importlib.util.find_spec("llama_cpp") is not None
        preferred = "llamacpp" if installed and not apple else "mlx"
    return [llamacpp, mlx] if preferred == "llamacpp" else [mlx, llamacpp]


def create_app(
    settings: Settings, backends: list[Backend] | None = None, ranks: Ranks | None = None
) -> QuartTrio:
    backends = default_backends(settings, ranks) if backends is None else backends
    ollama = OllamaStore(settings.ollama_models) if settings.ollama_models else None
    engine = Engine(
        backends,
        max_queue=settings.max_queue,
        default_keep_alive=settings.keep_alive,
        max_loaded=settings.max_loaded_models,
        num_parallel=settings.num_parallel,
        default_num_ctx=settings.context_length,
    )
    if ranks is not None:
        ranks.on_lost.append(engine.rank_lost)
    services = Services(engine=engine, store=ModelStore(settings.models, backends, ollama), settings=settings)
    app = QuartTrio("trillm")
    # Bodies are capped where they are read (fields.read_raw), so that blob uploads can be large.
    app.config["MAX_CONTENT_LENGTH"] = None
    app.config["TRILLM_MAX_BODY_BYTES"] = settings.max_body_bytes
    app.config["TRILLM_BODY_TIMEOUT"] = settings.body_timeout
    app.config["RESPONSE_TIMEOUT"] = None
    app.config["BACKGROUND_TASK_SHUTDOWN_TIMEOUT"] = None
    app.extensions["trillm"] = services
    install_error_handlers(app)
    unread_body.install(app)
    security.install(app, settings)
    health.register(app)
    models.register(app, services)
    manage.register(app, services)
    generate.register(app, services)
    chat.register(app, services)
    openai_chat.register(app, services)
    openai_completions.register(app, services)
    openai_models.register(app, services)
    openai_responses.register(app, services)
    anthropic_messages.register(app, services)
    embeddings.register(app, services)
    app.after_request(job_responses.enforcement_header)
    openapi.register(app, metrics=settings.metrics)
    if settings.metrics:
        from app.routes import metrics

        metrics.install(app, engine)

    @app.before_serving
    async def _start_engine() -> None:
        await app.nursery.start(engine.run)

    return app


def hypercorn_config(settings: Settings) -> Config:
    connection_timeouts.install()
    config = Config()
    host = f"[{settings.host}]" if ":" in settings.host else settings.host
    config.bind = [f"{host}:{settings.port}"]
    config.accesslog = None
    config.graceful_timeout = settings.shutdown_grace
    # Hypercorn closes a connection that has not finished sending its request headers after the
    # keep-alive timeout (slow-header clients), as it closes idle keep-alive connections.
    config.keep_alive_timeout = settings.header_timeout
    return config


async def wait_for_signal() -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for _ in signals:
            return


async def serve(
    app: QuartTrio,
    settings: Settings,
    *,
    shutdown_trigger: Callable[..., Awaitable[None]] | None = None,
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``app`` until ``shutdown_trigger`` returns (default: SIGINT or SIGTERM).

    ``started`` gets the bound URLs. On shutdown Hypercorn stops accepting and gives open
    connections ``settings.shutdown_grace`` seconds; live generations get most of that to finish, then end with an
    error line so that no client is cut off mid-line.
    """
    engine: Engine = app.extensions["trillm"].engine
    trigger = shutdown_trigger or wait_for_signal
    log.info("server config %s", json.dumps(settings.public(), sort_keys=True))

    async def shutdown() -> None:
        await trigger()
        log.info("shutting down")
        app.nursery.start_soon(engine.drain, settings.shutdown_grace * 0.8)

    await hypercorn_serve(app, hypercorn_config(settings), shutdown_trigger=shutdown, task_status=task_status)
