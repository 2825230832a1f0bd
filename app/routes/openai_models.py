"""``GET /v1/models`` and ``GET /v1/models/{id}``."""

from __future__ import annotations

from typing import Any

from quart import Quart, Response

from app.protocol.ndjson import json_response
from app.services import Services
from inference.store.model_store import StoredModel


def model_object(model: StoredModel) -> dict[str, Any]:
    owner = model.name.split("/")[0] if "/" in model.name else "library"
    return {
        "id": model.name,
        "object": "model",
        "created": int(model.modified_at.timestamp()),
        "owned_by": owner,
    }


def register(app: Quart, services: Services) -> None:
    @app.get("/v1/models")
    async def list_models() -> Response:
        return json_response(
            {"object": "list", "data": [model_object(m) for m in await services.list_models()]}
        )

    @app.get("/v1/models/<path:name>")
    async def get_model(name: str) -> Response:
        return json_response(model_object(await services.find_model(name)))
