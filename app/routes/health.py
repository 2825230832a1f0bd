"""``GET|HEAD /`` and ``GET|HEAD /api/version``: the probes clients use to find a server."""

from __future__ import annotations

from quart import Quart, Response

from app import __version__
from app.protocol.ndjson import json_response


def register(app: Quart) -> None:
    @app.route("/", methods=["GET", "HEAD"])
    async def root() -> Response:
        return Response("Ollama is running", content_type="text/plain; charset=utf-8")

    @app.route("/api/version", methods=["GET", "HEAD"])
    async def version() -> Response:
        return json_response({"version": __version__})
