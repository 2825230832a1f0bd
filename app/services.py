"""What every route needs: the engine, the model store and the settings, plus model lookup.

Looking a model up scans the store on disk: it runs on a worker thread, never on the event loop
that carries every other stream."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import trio

from app.config import Settings
from app.protocol import fields
from app.protocol.errors import BadRequest, NotFound
from app.protocol.requests import ChatRequest
from app.protocol.steering import read_steering
from inference.engine.job import GenerationRequest, JobKind, Steering, Truncation
from inference.engine.scheduler import Engine
from inference.store.model_store import InvalidModelName, ModelNotFound, ModelStore, StoredModel


def with_defaults(model: StoredModel, options: object) -> object:
    """The request's options over the model's default parameters (from its Modelfile)."""
    if not model.parameters or not (options is None or isinstance(options, dict)):
        return options  # a malformed value is reported by fields.Options
    return {**model.parameters, **(options or {})}


def conversation(model: StoredModel, messages: Sequence[dict[str, object]]) -> list[dict[str, object]]:
    """The model's system prompt (unless the request brings one) and example messages, then the request's."""
    head: list[dict[str, object]] = []
    if model.system and not any(m.get("role") == "system" for m in messages):
        head.append({"role": "system", "content": model.system})
    return [*head, *model.messages, *messages]


@dataclass
class Services:
    engine: Engine
    store: ModelStore
    settings: Settings

    def generation_request(
        self,
        body: dict[str, Any],
        model: StoredModel,
        messages: Sequence[dict[str, object]],
        *,
        has_input: bool,
        prompt: str | None = None,
        context: Sequence[int] = (),
        steering: Steering | None = None,
        truncate: Truncation = "off",
        action: str = "chat",
    ) -> GenerationRequest:
        """The engine request for a chat or generate body; without input it loads or unloads.

        ``truncate`` is how an over-long prompt is shortened; the body's ``truncate: false``
        turns it off (a 400 then, as OpenAI's routes always answer)."""
        short = model.name.removesuffix(":latest")
        if has_input and model.info.embedding:  # ``action``: what the route calls its work
            raise BadRequest(f'"{short}" does not support {action}', param="model")
        if not model.info.vision and any(m.get("images") for m in messages):
            raise BadRequest(f'"{short}" does not support images: it is a text-only model', param="model")
        keep_alive = fields.keep_alive(body)
        options = fields.Options(with_defaults(model, body.get("options")), self.settings.context_length)
        params = replace(options.params, logprobs=fields.logprobs(body))
        kind: JobKind = "generate" if has_input else ("unload" if keep_alive == 0 else "load")
        return GenerationRequest(
            model=model.name,
            path=model.path,
            kind=kind,
            messages=conversation(model, messages),
            prompt=prompt,
            context=context,
            params=params,
            num_predict=options.num_predict,
            num_ctx=options.num_ctx,
            truncate=truncate if fields.typed(body, "truncate", bool, True) else "off",
            num_keep=options.num_keep,
            stop=options.stop,
            keep_alive=keep_alive,
            steering=steering or Steering(),
            template=model.template,
        )

    async def translated_chat(self, chat: ChatRequest, model: StoredModel) -> GenerationRequest:
        """The engine request for a chat another dialect's body was translated into (OpenAI's
        chat completions and Responses, Anthropic's Messages): steered and checked as
        ``/api/chat`` does its own."""
        native = chat.model_dump(by_alias=True, exclude_none=True)
        steering = await read_steering(native, model.name, model.info)
        return self.generation_request(
            native,
            model,
            fields.messages(native, self.settings.max_image_pixels),
            has_input=True,
            steering=steering,
        )

    async def list_models(self) -> list[StoredModel]:
        """Every stored model; the scan reads the disk, so it runs off the event loop."""
        return await trio.to_thread.run_sync(self.store.list)

    async def find_model(self, name: object, *, missing_is_404: bool = False) -> StoredModel:
        """The stored model called ``name``, or Ollama's 400/404 for a missing, bad or unknown one."""
        if name is None or name == "":
            if missing_is_404:
                raise NotFound("model '' not found")
            raise BadRequest("model is required")
        if not isinstance(name, str):
            raise BadRequest('field "model" must be of type string')
        try:
            return await trio.to_thread.run_sync(self.store.resolve, name)
        except InvalidModelName as error:
            raise BadRequest("invalid model name") from error
        except ModelNotFound as error:
            raise NotFound(f"model '{name}' not found") from error
