"""``POST /api/chat``: a conversation rendered through the model's chat template."""

from __future__ import annotations

from typing import Any

from quart import Quart, Response

from app import fields
from app.ndjson import created_at
from app.responses import metrics, respond
from app.services import Services
from app.steering import read_steering
from inference.job import Finished


def register(app: Quart, services: Services) -> None:
    @app.post("/api/chat")
    async def chat() -> Response:
        body = await fields.read_body()
        model = services.find_model(body.get("model"))
        messages = fields.messages(body)
        stream = fields.typed(body, "stream", bool, True)
        output_format = read_steering(body, model.name)
        request = services.generation_request(
            body, model, messages, has_input=bool(messages), output_format=output_format
        )
        name = body["model"]

        def message(text: str) -> dict[str, Any]:
            return {"role": "assistant", "content": text}

        def chunk(text: str) -> dict[str, Any]:
            return {"model": name, "created_at": created_at(), "message": message(text), "done": False}

        def final(text: str, finished: Finished) -> dict[str, Any]:
            head = {"model": name, "created_at": created_at(), "message": message(text)}
            return head | metrics(finished)

        return await respond(services.engine, request, stream=stream, chunk=chunk, final=final)
