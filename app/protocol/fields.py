"""Reading and checking request bodies: JSON, model names, messages, options, keep_alive.

Each helper raises :class:`~app.protocol.errors.BadRequest` with a message naming the offending field.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import AsyncIterator
from typing import Any

import trio
from quart import current_app, g, request

from app.protocol.durations import DurationError, parse_duration
from app.protocol.errors import BadRequest, BodyTimeout, PayloadTooLarge
from app.protocol.requests import Body, Dialect, check
from inference.backends.base import SamplingParams
from validation.images import ImageProblem, check_image, from_base64

log = logging.getLogger("trillm.http")
ROLES = ("system", "user", "assistant", "tool")

# Ollama's option types; keys not listed are accepted and ignored.
FLOAT_OPTIONS = (
    "temperature", "top_p", "min_p", "typical_p", "repeat_penalty", "presence_penalty",
    "frequency_penalty", "mirostat_tau", "mirostat_eta", "tfs_z",
)  # fmt: skip
INT_OPTIONS = (
    "top_k", "seed", "num_predict", "num_keep", "repeat_last_n", "num_ctx", "num_batch",
    "num_gpu", "main_gpu", "num_thread", "mirostat", "draft_num_predict",
)  # fmt: skip
BOOL_OPTIONS = ("use_mmap", "use_mlock", "numa", "low_vram", "f16_kv", "penalize_newline")


async def read_body() -> dict[str, Any]:
    """The request's JSON object (400 for an empty, non-UTF-8, malformed or non-object body)."""
    raw = await read_raw(current_app.config["TRILLM_MAX_BODY_BYTES"])
    if not raw:
        raise BadRequest("missing request body")
    try:
        body = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as error:
        raise BadRequest(f"request body is not valid UTF-8: {error.reason} at byte {error.start}") from error
    except json.JSONDecodeError as error:
        raise BadRequest(f"invalid JSON: {error.msg} at line {error.lineno} column {error.colno}") from error
    except RecursionError as error:
        raise BadRequest("invalid JSON: nested too deeply") from error
    if not isinstance(body, dict):
        raise BadRequest("request body must be a JSON object")
    return body


async def read_request(model: type[Body], dialect: Dialect = "ollama") -> dict[str, Any]:
    """The request's JSON object, checked against the route's model (see ``requests.py``)."""
    return check(model, await read_body(), dialect)


async def read_raw(limit: int | None) -> bytes:
    """The request body as bytes, refusing (413) one longer than ``limit`` before it is all read."""
    too_large = PayloadTooLarge("request body too large")
    if limit is not None and (request.content_length or 0) > limit:
        raise too_large
    data = bytearray()
    async for chunk in body_chunks():
        data += chunk
        if limit is not None and len(data) > limit:
            raise too_large
    return bytes(data)


async def body_chunks(*, idle: bool = False) -> AsyncIterator[bytes]:
    """The request body as it arrives; 408 if it takes longer than the body timeout.

    With ``idle`` the timeout is the longest wait between two chunks (for large uploads),
    otherwise it bounds the whole body.
    """
    seconds = current_app.config["TRILLM_BODY_TIMEOUT"]
    deadline = trio.current_time() + seconds
    chunks = aiter(request.body)
    while True:
        if idle:
            deadline = trio.current_time() + seconds
        chunk = None
        with trio.move_on_at(deadline):
            try:
                chunk = await anext(chunks)
            except StopAsyncIteration:
                g.body_read = True
                return
        if chunk is None:
            log.warning("request body timeout (%gs) on %s %s", seconds, request.method, request.path)
            raise BodyTimeout(f"the request body did not arrive within {seconds:.0f} seconds")
        yield chunk


def typed(body: dict[str, Any], key: str, kind: type | tuple[type, ...], default: Any = None) -> Any:
    """``body[key]`` if it has the right JSON type (null means default), else 400."""
    value = body.get(key)
    if value is None:
        return default
    # JSON true/false are Python ints too: only a field that wants a bool may take one.
    if not isinstance(value, kind) or (isinstance(value, bool) and bool not in _as_tuple(kind)):
        raise BadRequest(f'field "{key}" must be of type {_type_name(kind)}')
    return value


def _as_tuple(kind: type | tuple[type, ...]) -> tuple[type, ...]:
    return kind if isinstance(kind, tuple) else (kind,)


def _type_name(kind: type | tuple[type, ...]) -> str:
    names = {str: "string", bool: "boolean", int: "integer", float: "number", list: "array", dict: "object"}
    return " or ".join(names.get(k, k.__name__) for k in _as_tuple(kind))


def keep_alive(body: dict[str, Any]) -> float | None:
    """Seconds (negative = forever) or ``None`` for the server default."""
    value = body.get("keep_alive")
    if value is None:
        return None
    try:
        return parse_duration(value)
    except DurationError as error:
        raise BadRequest(str(error)) from error


def messages(body: dict[str, Any], max_image_pixels: int | None = None) -> list[dict[str, object]]:
    """Chat messages with lower-cased roles; 400 naming the first bad one. A message's base64
    ``images`` become their checked bytes (``max_image_pixels`` ``None``: refused)."""
    value = typed(body, "messages", list, [])
    result = []
    for i, message in enumerate(value):
        if not isinstance(message, dict):
            raise BadRequest(f"messages[{i}] must be an object")
        role = message.get("role")
        if not isinstance(role, str) or role.lower() not in ROLES:
            raise BadRequest(f"messages[{i}].role must be one of {', '.join(ROLES)} (got {json.dumps(role)})")
        content = message.get("content")
        if content is not None and not isinstance(content, str):
            raise BadRequest(f"messages[{i}].content must be a string")
        cleaned: dict[str, object] = {"role": role.lower(), "content": content or ""}
        if message.get("images"):
            if max_image_pixels is None:
                raise BadRequest(f"messages[{i}].images: images are not accepted here")
            cleaned["images"] = images(message["images"], f"messages[{i}].images", max_image_pixels)
        for key in ("tool_calls", "tool_name", "tool_call_id", "thinking"):
            if message.get(key) is not None:
                cleaned[key] = message[key]
        result.append(cleaned)
    return result


def images(value: object, where: str, max_pixels: int) -> list[bytes]:
    """Base64 images (Ollama's ``images``) as checked bytes; 400 naming the first bad one."""
    if not isinstance(value, list):
        raise BadRequest(f"{where} must be an array of base64 strings")
    try:
        return [
            check_image(from_base64(text, f"{where}[{i}]"), f"{where}[{i}]", max_pixels).data
            for i, text in enumerate(value)
        ]
    except ImageProblem as problem:
        raise BadRequest(str(problem)) from problem


def logprobs(body: dict[str, Any]) -> int:
    """``-1`` (off), or how many alternatives to report per token with ``logprobs: true``."""
    wanted = typed(body, "logprobs", bool, False)
    top = typed(body, "top_logprobs", int, 0)
    if not 0 <= top <= 20:
        raise BadRequest("top_logprobs must be between 0 and 20")
    return top if wanted else -1


class Options:
    """Validated ``options``: sampling parameters plus the engine's limits."""

    def __init__(self, raw: Any, default_num_ctx: int) -> None:
        if raw is None:
            raw = {}
        if not isinstance(raw, dict):
            raise BadRequest('field "options" must be an object')
        values = {k: _option(k, v) for k, v in raw.items() if v is not None}
        stop = values.get("stop", [])
        self.stop: list[str] = list(stop)
        self.num_predict = int(values.get("num_predict", -1))
        # None: the engine's default window (a backend that sizes its context at load keeps it).
        self.num_ctx: int | None = max(4, int(values["num_ctx"])) if "num_ctx" in values else None
        self.num_keep = max(0, int(values.get("num_keep", 4)))
        seed = values.get("seed")
        if values.get("repeat_penalty", 1.0) <= 0:
            raise BadRequest('option "repeat_penalty" must be greater than 0')
        self.params = SamplingParams(
            temperature=max(0.0, float(values.get("temperature", 0.8))),
            top_k=max(0, int(values.get("top_k", 40))),
            top_p=float(values.get("top_p", 0.9)),
            min_p=min(max(float(values.get("min_p", 0.0)), 0.0), 1.0),
            seed=None if seed is None or seed < 0 else int(seed),
            repeat_penalty=float(values.get("repeat_penalty", 1.0)),
            repeat_last_n=_repeat_window(
                int(values.get("repeat_last_n", 64)), self.num_ctx or default_num_ctx
            ),
            presence_penalty=float(values.get("presence_penalty", 0.0)),
            frequency_penalty=float(values.get("frequency_penalty", 0.0)),
            prefill_chunk=max(1, int(values.get("num_batch", 512))),
        )


def _repeat_window(n: int, num_ctx: int) -> int:
    return num_ctx if n < 0 else n


def _option(key: str, value: Any) -> Any:
    if key in FLOAT_OPTIONS:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise BadRequest(f'option "{key}" must be of type float32')
        if not math.isfinite(value) or abs(value) > 3.4e38:
            raise BadRequest(f'option "{key}" must be a finite float32')
        return float(value)
    if key in INT_OPTIONS:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise BadRequest(f'option "{key}" must be of type integer')
        if abs(value) > 2**62:
            raise BadRequest(f'option "{key}" is out of range')
        return int(value)
    if key in BOOL_OPTIONS:
        if not isinstance(value, bool):
            raise BadRequest(f'option "{key}" must be of type bool')
        return value
    if key == "stop":
        if not isinstance(value, list) or not all(isinstance(s, str) for s in value):
            raise BadRequest('option "stop" must be of type array (of strings)')
        return value
    return value  # unknown keys are ignored, as Ollama does
