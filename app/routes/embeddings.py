"""``POST /api/embed``, ``/api/embeddings`` and ``/v1/embeddings``: vectors from embedding models.

Each request is one ``embed`` job (``inference/engine/embedding.py``): every input of it is
computed in batches on the engine's thread, between the decode steps of the models that generate,
and a client that leaves cancels the rest at the next batch. ``/api/embed`` and ``/v1/embeddings``
return unit-length vectors (``dimensions`` keeps the first N values and scales them again);
``/api/embeddings``, Ollama's older route, returns the vector as the model pools it.
"""

from __future__ import annotations

import base64
import struct
from collections.abc import Sequence
from typing import Any

from quart import Quart, Response

from app.protocol import fields
from app.protocol.errors import BadRequest
from app.protocol.ndjson import json_response
from app.protocol.requests import EmbeddingsRequest, EmbedRequest, LegacyEmbeddingsRequest
from app.routes.job_responses import run_to_end
from app.services import Services
from inference.engine.embedding import finish_vector
from inference.engine.job import Finished, GenerationRequest
from inference.store.model_store import StoredModel


def not_an_embedding_model(model: StoredModel) -> BadRequest:
    return BadRequest(f'"{model.name.removesuffix(":latest")}" does not support embeddings', param="model")


def dimensions(body: dict[str, Any]) -> int | None:
    value = body.get("dimensions")
    if value is not None and value < 1:
        raise BadRequest("dimensions must be at least 1", param="dimensions")
    return value


def register(app: Quart, services: Services) -> None:
    async def embed(
        model: StoredModel,
        body: dict[str, Any],
        inputs: Sequence[str | Sequence[int]],
        *,
        truncate: bool = True,
    ) -> Finished:
        if not model.info.embedding:
            raise not_an_embedding_model(model)
        keep_alive = fields.keep_alive(body)
        request = GenerationRequest(
            model=model.name,
            path=model.path,
            kind="embed" if inputs else ("unload" if keep_alive == 0 else "load"),
            inputs=inputs,
            truncate="tokens" if truncate else "off",
            keep_alive=keep_alive,
        )
        return await run_to_end(services.engine, request)

    @app.post("/api/embed")
    async def ollama_embed() -> Response:
        body = await fields.read_request(EmbedRequest)
        model = await services.find_model(body.get("model"), missing_is_404=True)
        raw = body.get("input")
        inputs = ([raw] if raw else []) if isinstance(raw, str) else list(raw or [])
        keep = dimensions(body)
        finished = await embed(model, body, inputs, truncate=fields.typed(body, "truncate", bool, True))
        return json_response(
            {
                "model": model.name,
                "embeddings": [finish_vector(v, keep) for v in finished.vectors],
                "total_duration": finished.total_duration,
                "load_duration": finished.load_duration,
                "prompt_eval_count": finished.prompt_eval_count,
            }
        )

    @app.post("/api/embeddings")
    async def ollama_embeddings() -> Response:
        body = await fields.read_request(LegacyEmbeddingsRequest)
        model = await services.find_model(body.get("model"))
        prompt = body.get("prompt") or ""
        finished = await embed(model, body, [prompt] if prompt else [])
        return json_response({"embedding": list(finished.vectors[0]) if finished.vectors else []})

    @app.post("/v1/embeddings")
    async def openai_embeddings() -> Response:
        body = await fields.read_request(EmbeddingsRequest, "openai")
        model = await services.find_model(body.get("model"))
        raw = body.get("input")
        if raw is None or raw == []:
            raise BadRequest(
                "input must be a non-empty string, array of strings or of token ids", param="input"
            )
        inputs: list[str | Sequence[int]]
        if isinstance(raw, str):
            inputs = [raw]
        elif all(isinstance(x, int) for x in raw):
            inputs = [raw]  # one input as token ids
        else:
            inputs = list(raw)
        keep = dimensions(body)
        finished = await embed(model, body, inputs, truncate=False)
        packed = body.get("encoding_format") == "base64"
        data = []
        for i, vector in enumerate(finished.vectors):
            values = finish_vector(vector, keep)
            encoded: Any = values
            if packed:
                encoded = base64.b64encode(struct.pack(f"<{len(values)}f", *values)).decode()
            data.append({"object": "embedding", "embedding": encoded, "index": i})
        tokens = finished.prompt_eval_count
        usage = {"prompt_tokens": tokens, "total_tokens": tokens}
        return json_response({"object": "list", "data": data, "model": body["model"], "usage": usage})
