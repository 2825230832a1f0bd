"""``POST /api/chat``: a conversation rendered through the model's chat template."""

from __future__ import annotations

from typing import Any

from quart import Quart, Response

from app.protocol import fields
from app.protocol.ndjson import created_at
from app.protocol.requests import ChatRequest
from app.protocol.steering import read_steering
from app.routes.job_responses import NdjsonCodec, metrics, ollama_calls, ollama_logprobs, respond
from app.services import Services
from inference.engine.job import Finished, TextChunk


def register(app: Quart, services: Services) -> None:
    @app.post("/api/chat")
    async def chat() -> Response:
        body = await fields.read_request(ChatRequest)
        model = await services.find_model(body.get("model"))
        messages = fields.messages(body, services.settings.max_image_pixels)
        stream = fields.typed(body, "stream", bool, True)
        steering = await read_steering(body, model.name, model.info)
        request = services.generation_request(
            body, model, messages, has_input=bool(messages), steering=steering, truncate="turns"
        )
        name = body["model"]

        def message(part: TextChunk) -> dict[str, Any]:
            out: dict[str, Any] = {"role": "assistant", "content": part.text}
            if part.thinking:
                out["thinking"] = part.thinking
            if part.tool_calls:
                out["tool_calls"] = ollama_calls(part)
            return out

        def chunk(part: TextChunk) -> dict[str, Any]:
            head = {"model": name, "created_at": created_at(), "message": message(part), "done": False}
            return head | ollama_logprobs(part)

        def final(whole: TextChunk, finished: Finished) -> dict[str, Any]:
            head = {"model": name, "created_at": created_at(), "message": message(whole)}
            return head | metrics(finished) | ollama_logprobs(whole)

        return await respond(services.engine, request, stream=stream, codec=NdjsonCodec(chunk, final))
