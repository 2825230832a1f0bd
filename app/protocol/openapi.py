"""The OpenAPI 3.1 description of every route, served at ``GET /openapi.json``.

It documents request bodies (what the routes accept) and the statuses they answer with; a test
checks that it names exactly the routes the app serves, and schemathesis drives the server from it.
"""

from __future__ import annotations

from typing import Any

from quart import Quart, Response

from app import __version__
from app.protocol.ndjson import json_response

NUMBER = {"type": "number"}
INTEGER = {"type": "integer"}
STRING = {"type": "string"}
BOOLEAN = {"type": "boolean"}
KEEP_ALIVE = {"oneOf": [NUMBER, STRING]}
OPTIONS = {
    "type": "object",
    "properties": {
        **{
            k: NUMBER
            for k in (
                "temperature",
                "top_p",
                "min_p",
                "repeat_penalty",
                "presence_penalty",
                "frequency_penalty",
            )
        },
        **{k: INTEGER for k in ("top_k", "seed", "num_predict", "num_ctx", "num_batch", "repeat_last_n")},
        "stop": {"oneOf": [STRING, {"type": "array", "items": STRING}]},
    },
}
MESSAGE = {
    "type": "object",
    "required": ["role"],
    "properties": {
        "role": {"enum": ["system", "user", "assistant", "tool"]},
        "content": STRING,
        "thinking": STRING,
        "tool_name": STRING,
        "tool_call_id": STRING,
        "tool_calls": {"type": "array", "items": {"type": "object"}},
    },
}
FORMAT = {"oneOf": [{"const": "json"}, {"type": "object"}]}
THINK = {"oneOf": [BOOLEAN, {"enum": ["low", "medium", "high"]}]}
TOOLS = {"type": "array", "items": {"type": "object"}}
MODEL = {"type": "string", "minLength": 1}
ERROR = {"type": "object", "required": ["error"], "properties": {"error": {}}}


def _body(properties: dict[str, Any], required: tuple[str, ...] = ()) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "object", "properties": properties}
    if required:
        schema["required"] = list(required)
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


CHAT = {
    "model": MODEL,
    "messages": {"type": "array", "items": MESSAGE},
    "stream": BOOLEAN,
    "options": OPTIONS,
    "keep_alive": KEEP_ALIVE,
    "format": FORMAT,
    "tools": TOOLS,
    "think": THINK,
    "logprobs": BOOLEAN,
    "top_logprobs": INTEGER,
    "tool_choice": {"oneOf": [{"enum": ["auto", "none", "required", "any"]}, {"type": "object"}]},
    "parallel_tool_calls": BOOLEAN,
}
GENERATE = {
    "model": MODEL,
    "prompt": STRING,
    "system": STRING,
    "raw": BOOLEAN,
    "context": {"type": "array", "items": INTEGER},
    **{
        k: CHAT[k] for k in ("stream", "options", "keep_alive", "format", "think", "logprobs", "top_logprobs")
    },
}
OPENAI_MESSAGE = {
    "type": "object",
    "required": ["role"],
    "properties": {
        "role": {"enum": ["system", "developer", "user", "assistant", "tool"]},
        "content": {"oneOf": [STRING, {"type": "array", "items": {"type": "object"}}, {"type": "null"}]},
        "tool_call_id": STRING,
        "tool_calls": {"type": "array", "items": {"type": "object"}},
    },
}
OPENAI_COMMON = {
    "model": MODEL,
    "stream": BOOLEAN,
    "max_tokens": INTEGER,
    "temperature": NUMBER,
    "top_p": NUMBER,
    "seed": INTEGER,
    "stop": {"oneOf": [STRING, {"type": "array", "items": STRING}]},
    "presence_penalty": NUMBER,
    "frequency_penalty": NUMBER,
    "n": INTEGER,
}
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
                _body({"model": MODEL, "verbose": BOOLEAN}, ("model",)),
                _answers("details", 400, 404),
            )
        },
        "/api/generate": {
            "post": _op(
                "complete a prompt",
                _body(GENERATE, ("model",)),
                _answers("NDJSON or one object", 400, 404, 422, 503, stream=True),
            )
        },
        "/api/chat": {
            "post": _op(
                "chat",
                _body(CHAT, ("model",)),
                _answers("NDJSON or one object", 400, 404, 422, 503, stream=True),
            )
        },
        "/api/pull": {
            "post": _op(
                "pull from Hugging Face",
                _body({"model": MODEL, "stream": BOOLEAN, "insecure": BOOLEAN}, ("model",)),
                _answers("progress objects", *PROGRESS, stream=True),
            )
        },
        "/api/create": {
            "post": _op(
                "create a model",
                _body(
                    {
                        "model": MODEL,
                        "from": STRING,
                        "files": {"type": "object", "additionalProperties": STRING},
                        "system": STRING,
                        "template": STRING,
                        "license": {"oneOf": [STRING, {"type": "array", "items": STRING}]},
                        "parameters": OPTIONS,
                        "messages": {"type": "array", "items": MESSAGE},
                        "stream": BOOLEAN,
                    },
                    ("model",),
                ),
                _answers("progress objects", *PROGRESS, stream=True),
            )
        },
        "/api/copy": {
            "post": _op(
                "copy a model",
                _body({"source": MODEL, "destination": MODEL}, ("source", "destination")),
                _answers("copied", 400, 404),
            )
        },
        "/api/delete": {
            "delete": _op(
                "delete a model", _body({"model": MODEL}, ("model",)), _answers("deleted", 400, 404)
            )
        },
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
                _body(
                    {
                        **OPENAI_COMMON,
                        "messages": {"type": "array", "items": OPENAI_MESSAGE},
                        "tools": TOOLS,
                        "tool_choice": CHAT["tool_choice"],
                        "parallel_tool_calls": BOOLEAN,
                        "response_format": {"type": "object"},
                    },
                    ("model", "messages"),
                ),
                _answers("a completion, or Server-Sent Events", 400, 404, 422, 503),
            )
        },
        "/v1/completions": {
            "post": _op(
                "OpenAI completions",
                _body(
                    {
                        **OPENAI_COMMON,
                        "prompt": {"oneOf": [STRING, {"type": "array", "items": STRING}]},
                        "logprobs": INTEGER,
                    },
                    ("model", "prompt"),
                ),
                _answers("a completion", 400, 404, 422, 503),
            )
        },
        "/v1/embeddings": {
            "post": _op(
                "OpenAI embeddings (every model answers 400 for now)",
                _body({"model": MODEL, "input": {}}, ("model",)),
                {
                    "501": {"description": "not implemented", "content": {"application/json": {}}},
                    "400": {"description": "error"},
                },
            )
        },
        **{
            path: {
                "post": _op(
                    "embeddings (not implemented yet: 501)",
                    _body({"model": MODEL, "input": {}, "prompt": STRING}),
                    {"501": {"description": "not implemented", "content": {"application/json": {}}}},
                )
            }
            for path in ("/api/embed", "/api/embeddings")
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
