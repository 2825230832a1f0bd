"""``GET /api/tags``, ``POST /api/show`` and ``GET /api/ps``: what is stored and what is loaded."""

from __future__ import annotations

import math
import platform
import time
from datetime import datetime, timedelta
from typing import Any

from quart import Quart, Response

from app.protocol import fields, modelfile
from app.protocol.ndjson import json_response, local_time
from app.protocol.requests import ShowRequest
from app.protocol.steering import capabilities
from app.services import Services
from inference.backends.base import ModelInfo, placement_of
from inference.store.model_store import StoredModel

FOREVER = timedelta(days=365 * 292)
# Apple Silicon shares memory between CPU and GPU, so a loaded model is all "VRAM".
UNIFIED_MEMORY = (
    platform.system() == "Darwin" and platform.machine() == "arm64"
)  # what Ollama reports for a model kept forever


def parameter_size(count: int) -> str:
    for unit, scale in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if count >= scale:
            return f"{count / scale:.1f}{unit}"
    return str(count)


def loaded_window(info: ModelInfo, default: int) -> int:
    """The window a loaded model serves a request without num_ctx: the context a backend sized
    at load, else the default capped by the trained window."""
    return info.context_length if info.trained_context else min(default, info.context_length)


def store_entry(model: StoredModel) -> dict[str, str]:
    """How the store holds ``model``: ``manifest`` (pulled, created, copied), ``directory`` or
    ``file`` (placed there by hand) or ``ollama`` (read from an Ollama store)."""
    if model.ollama is not None:
        kind = "ollama"
    elif model.manifest is not None:
        kind = "manifest"
    else:
        kind = "file" if model.path.is_file() else "directory"
    return {"kind": kind, "path": str(model.path)}


def details(model: StoredModel) -> dict[str, Any]:
    info = model.info
    return {
        "parent_model": model.manifest.parent if model.manifest else "",
        "format": "gguf" if model.backend == "llamacpp" else "safetensors",
        "family": info.family,
        "families": [info.family],
        "parameter_size": parameter_size(info.parameter_count),
        "quantization_level": info.quantization,
    }


def model_info(info: ModelInfo) -> dict[str, Any]:
    arch = info.family
    out: dict[str, Any] = {
        "general.architecture": arch,
        "general.parameter_count": info.parameter_count,
        f"{arch}.context_length": info.context_length,
    }
    out |= {f"{arch}.{key}": value for key, value in info.extra.items() if value is not None}
    return out


def register(app: Quart, services: Services) -> None:
    @app.route("/api/tags", methods=["GET", "HEAD"])
    async def tags() -> Response:
        models = [
            {
                "name": m.name,
                "model": m.name,
                "modified_at": local_time(m.modified_at),
                "size": m.info.size_bytes,
                "digest": m.digest,
                "details": details(m),
                "capabilities": capabilities(m.info),
            }
            for m in await services.list_models()
        ]
        return json_response({"models": models})

    @app.post("/api/show")
    async def show() -> Response:
        body = await fields.read_request(ShowRequest)
        model = await services.find_model(body.get("model") or body.get("name"))
        info = model.info
        manifest = model.manifest
        parameters = {"num_ctx": services.settings.context_length} | model.parameters
        return json_response(
            {
                "license": (manifest.license if manifest else None) or "",
                "modelfile": modelfile.render(
                    (manifest.parent or manifest.source) if manifest else str(model.path),
                    parameters=model.parameters,
                    system=model.system,
                    template=model.template,
                    messages=model.messages,
                    license_=manifest.license if manifest else None,
                ),
                "parameters": "\n".join(f"{k:<30} {v}" for k, v in modelfile.parameter_lines(parameters)),
                "template": info.chat_template or "",
                "system": model.system or "",
                "messages": model.messages,
                "details": details(model),
                "model_info": model_info(info),
                "capabilities": capabilities(info),
                "modified_at": local_time(model.modified_at),
                # trillm's own: where the model lives (the CLI asks before deleting what a user
                # placed in the store by hand).
                "store_entry": store_entry(model),
            }
        )

    @app.get("/api/ps")
    async def ps() -> Response:
        stored = {m.name: m for m in await services.list_models()}
        now = datetime.now().astimezone()
        out = []
        for resident in services.engine.resident():
            model = stored.get(resident.name)
            if model is None:
                continue
            remaining = resident.expires_at - time.monotonic()
            expires = now + (FOREVER if math.isinf(remaining) else timedelta(seconds=remaining))
            entry = {
                "name": model.name,
                "model": model.name,
                "size": resident.info.size_bytes,
                "digest": model.digest,
                "details": details(model),
                "expires_at": local_time(expires),
                "size_vram": resident.info.size_bytes if UNIFIED_MEMORY else 0,
                "context_length": loaded_window(resident.info, services.settings.context_length),
            }
            placement = placement_of(resident.model)
            if placement is not None:  # trillm: a model sharded across a distributed group
                entry["distributed"] = placement
            out.append(entry)
        return json_response({"models": out})
