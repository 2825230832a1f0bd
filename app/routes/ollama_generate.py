"""``POST /api/generate``: one prompt, rendered through the chat template unless ``raw``."""

from __future__ import annotations

from typing import Any

from quart import Quart, Response

from app.protocol import fields
from app.protocol.errors import BadRequest
from app.protocol.ndjson import created_at
from app.protocol.requests import GenerateRequest
from app.protocol.steering import read_steering
from app.routes.job_responses import NdjsonCodec, metrics, ollama_logprobs, respond
from app.services import Services
from inference.engine.job import Finished, TextChunk


def register(app: Quart, services: Services) -> None:
    @app.post("/api/generate")
    async def generate() -> Response:
        body = await fields.read_request(GenerateRequest)
        model = await services.find_model(body.get("model"), missing_is_404=True)
        prompt = fields.typed(body, "prompt", str, "")
        system = fields.typed(body, "system", str, "")
        raw = fields.typed(body, "raw", bool, False)
        stream = fields.typed(body, "stream", bool, True)
        context = fields.typed(body, "context", list, [])
        if not all(isinstance(t, int) and not isinstance(t, bool) and t >= 0 for t in context):
            raise BadRequest('field "context" must be an array of token ids (non-negative integers)')
        if raw and (system or context or body.get("template")):
            raise BadRequest("raw mode does not support template, system, or context")
        for unsupported in ("template", "suffix"):
            if body.get(unsupported):
                raise BadRequest(f'"{unsupported}" is not supported by this server yet')
        images = body.get("images")
        if images and raw:
            raise BadRequest("raw mode does not support images: send them without raw")
        steering = await read_steering(body, model.name, model.info, allow_tools=False)
        messages: list[dict[str, object]] = []
        if system:
            messages.append({"role": "system", "content": system})
        user: dict[str, object] = {"role": "user", "content": prompt}
        if images:
            user["images"] = fields.images(images, "images", services.settings.max_image_pixels)
        messages.append(user)
        request = services.generation_request(
            body,
            model,
            messages,
            has_input=bool(prompt or images),
            prompt=prompt if raw else None,
            context=context,
            steering=steering,
            truncate="tokens",
            action="generate",
        )
        name = body["model"]

        def head(part: TextChunk) -> dict[str, Any]:
            out = {"model": name, "created_at": created_at(), "response": part.text}
            return out | ({"thinking": part.thinking} if part.thinking else {})

        def chunk(part: TextChunk) -> dict[str, Any]:
            return head(part) | {"done": False} | ollama_logprobs(part)

        def final(whole: TextChunk, finished: Finished) -> dict[str, Any]:
            out = head(whole) | metrics(finished) | ollama_logprobs(whole)
            if not raw and finished.context:
                out["context"] = list(finished.context)
            return out

        return await respond(services.engine, request, stream=stream, codec=NdjsonCodec(chunk, final))
