"""The OpenAPI 3.1 description of every route, served at ``GET /openapi.json``.

Request bodies are generated from the pydantic models the routes check bodies with
(``requests.py``), so the document cannot drift from what is accepted; the paths list the statuses
each route answers with. A test checks that it names exactly the routes the app serves, and
schemathesis drives the server from it.
"""

from __future__ import annotations

from typing import Any

from pydantic.json_schema import models_json_schema
from quart import Quart, Response

from app import __version__
from app.protocol.anthropic_request import CountTokensRequest, MessagesRequest
from app.protocol.ndjson import json_response
from app.protocol.requests import (
    Body,
    ChatCompletionRequest,
    ChatRequest,
    CompletionRequest,
    CopyRequest,
    CreateRequest,
    DeleteRequest,
    EmbeddingsRequest,
    EmbedRequest,
    GenerateRequest,
    LegacyEmbeddingsRequest,
    PullRequest,
    ShowRequest,
)
from app.protocol.responses_request import ResponsesRequest

STRING = {"type": "string"}
ERROR = {"type": "object", "required": ["error"], "properties": {"error": {}}}
MODELS: tuple[type[Body], ...] = (
    ChatRequest,
    GenerateRequest,
    ShowRequest,
    PullRequest,
    CreateRequest,
    CopyRequest,
    DeleteRequest,
    EmbedRequest,
    LegacyEmbeddingsRequest,
    ChatCompletionRequest,
    CompletionRequest,
    EmbeddingsRequest,
    ResponsesRequest,
    MessagesRequest,
    CountTokensRequest,
)


def components() -> dict[str, Any]:
    """Every request model's JSON Schema, with the models they use, under one ``$defs`` map."""
    _, schemas = models_json_schema(
        [(model, "validation") for model in MODELS], ref_template="#/components/schemas/{model}"
    )
    return dict(schemas.get("$defs", {}))


def _body(model: type[Body]) -> dict[str, Any]:
    schema = {"$ref": f"#/components/schemas/{model.__name__}"}
    return {"required": True, "content": {"application/json": {"schema": schema}}}


def _answers(ok: str, *errors: int, stream: bool = False) -> dict[str, Any]:
    kind = "application/x-ndjson" if stream else "application/json"
    out: dict[str, Any] = {"200": {"description": ok, "content": {kind: {}}}}
    for status in errors:
        out[str(status)] = {"description": "error", "content": {"application/json": {"schema": ERROR}}}
    return out


def _op(summary: str, body: dict[str, Any] | None, answers: dict[str, Any]) -> dict[str, Any]:
    op: dict[str, Any] = {"summary": summary, "responses": answers}
    if body is not None:
        op["requestBody"] = body
    return op


PROGRESS = (400, 404, 500, 502, 507)


def document() -> dict[str, Any]:
    paths: dict[str, Any] = {
        "/": {"get": _op("liveness", None, {"200": {"description": "Ollama is running"}})},
        "/api/version": {"get": _op("server version", None, _answers("version"))},
        "/api/tags": {"get": _op("stored models", None, _answers("models"))},
        "/api/ps": {"get": _op("loaded models", None, _answers("models"))},
        "/api/show": {
            "post": _op(
                "describe a model",
                _body(ShowRequest),
                _answers("details", 400, 404),
            )
        },
        "/api/generate": {
            "post": _op(
                "complete a prompt",
                _body(GenerateRequest),
                _answers("NDJSON or one object", 400, 404, 422, 503, stream=True),
            )
        },
        "/api/chat": {
            "post": _op(
                "chat",
                _body(ChatRequest),
                _answers("NDJSON or one object", 400, 404, 422, 503, stream=True),
            )
        },
        "/api/pull": {
            "post": _op(
                "pull from Hugging Face",
                _body(PullRequest),
                _answers("progress objects", *PROGRESS, stream=True),
            )
        },
        "/api/create": {
            "post": _op(
                "create a model",
                _body(CreateRequest),
                _answers("progress objects", *PROGRESS, stream=True),
            )
        },
        "/api/copy": {
            "post": _op(
                "copy a model",
                _body(CopyRequest),
                _answers("copied", 400, 404),
            )
        },
        "/api/delete": {"delete": _op("delete a model", _body(DeleteRequest), _answers("deleted", 400, 404))},
        "/api/blobs/{digest}": {
            "parameters": [
                {
                    "name": "digest",
                    "in": "path",
                    "required": True,
                    "schema": {"type": "string", "pattern": "^sha256:[0-9a-f]{64}$"},
                }
            ],
            "head": _op(
                "whether a blob exists",
                None,
                {
                    "200": {"description": "present"},
                    "404": {"description": "absent"},
                    "400": {"description": "bad digest"},
                },
            ),
            "post": _op(
                "upload a blob",
                {
                    "required": True,
                    "content": {
                        "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}
                    },
                },
                {
                    "201": {"description": "stored"},
                    "200": {"description": "already stored"},
                    **{k: v for k, v in _answers("", 400).items() if k != "200"},
                },
            ),
        },
        "/v1/chat/completions": {
            "post": _op(
                "OpenAI chat completions",
                _body(ChatCompletionRequest),
                _answers("a completion, or Server-Sent Events", 400, 404, 422, 503),
            )
        },
        "/v1/responses": {
            "post": _op(
                "OpenAI Responses (stateless)",
                _body(ResponsesRequest),
                _answers("a response, or Server-Sent Events", 400, 404, 422, 503),
            )
        },
        "/v1/messages": {
            "post": _op(
                "Anthropic Messages",
                _body(MessagesRequest),
                _answers("a message, or Server-Sent Events", 400, 404, 422, 503),
            )
        },
        "/v1/messages/count_tokens": {
            "post": _op(
                "Anthropic token count", _body(CountTokensRequest), _answers("input_tokens", 400, 404)
            )
        },
        "/v1/completions": {
            "post": _op(
                "OpenAI completions",
                _body(CompletionRequest),
                _answers("a completion", 400, 404, 422, 503),
            )
        },
        "/v1/embeddings": {
            "post": _op("OpenAI embeddings", _body(EmbeddingsRequest), _answers("vectors", 400, 404, 503))
        },
        "/api/embed": {
            "post": _op("embeddings (unit length)", _body(EmbedRequest), _answers("vectors", 400, 404, 503))
        },
        "/api/embeddings": {
            "post": _op(
                "one embedding (Ollama's older route)",
                _body(LegacyEmbeddingsRequest),
                _answers("a vector", 400, 404, 503),
            )
        },
        "/v1/models": {"get": _op("OpenAI model list", None, _answers("models"))},
        "/v1/models/{model}": {
            "parameters": [{"name": "model", "in": "path", "required": True, "schema": STRING}],
            "get": _op("one model", None, _answers("model", 404)),
        },
        "/openapi.json": {"get": _op("this document", None, _answers("OpenAPI 3.1"))},
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "trillm",
            "version": __version__,
            "description": "Ollama's API and OpenAI's, served by trillm.",
        },
        "paths": paths,
        "components": {"schemas": components()},
    }


def register(app: Quart, *, metrics: bool) -> None:
    spec = document()
    if metrics:
        spec["paths"]["/metrics"] = {
            "get": _op("Prometheus metrics", None, {"200": {"description": "text exposition"}})
        }

    @app.get("/openapi.json")
    async def openapi() -> Response:
        return json_response(spec)
