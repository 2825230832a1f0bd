"""The HTTP errors the API returns, mapped to responses in one place.

Every error is ``{"error": "<message>"}`` with the status Ollama uses::

    ApiError (status, message)
    ├── BadRequest           400  malformed body, field or option; a request the model cannot run
    ├── Unauthorized         401  API key missing or wrong (with WWW-Authenticate)
    ├── Forbidden            403  non-local Host on a loopback bind; management switched off
    ├── NotFound             404  unknown model, blob or route
    ├── BodyTimeout          408  body not sent in time
    ├── PayloadTooLarge      413  body over the cap
    ├── Unprocessable        422  a reply that broke its format or tool schema (with the partial)
    ├── TooManyHeaders       431  more headers than the limit
    ├── NotImplementedHere   501  a route that is known but not built yet
    ├── BadGateway           502  the Hub failed or could not be reached
    ├── ServiceUnavailable   503  queue full, out of memory, a distributed rank lost (Retry-After)
    ├── InsufficientStorage  507  the disk cannot hold a download
    └── (500)                     anything unexpected, logged with its traceback

``inference/`` never chooses a status: its failures carry a :class:`~inference.failures.FailureKind`,
and :data:`FAILURES` is the one map from kind to error class.

Under ``/v1/`` the same errors take OpenAI's shape, ``{"error": {"message", "type", "param",
"code"}}``, with the statuses the official client maps to its exception classes; under
``/v1/messages`` Anthropic's, ``{"type": "error", "error": {"type", "message"}}``.
"""

from __future__ import annotations

import logging
from typing import Any

from quart import Quart, Response, has_request_context, request
from werkzeug.exceptions import HTTPException

from app.protocol.ndjson import json_response
from inference.failures import FailureKind

log = logging.getLogger("trillm.http")


class ApiError(Exception):
    """An error with a status and a message for the client."""

    status = 500

    def __init__(
        self, message: str, *, param: str | None = None, extra: dict[str, Any] | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param  # the request field at fault, for OpenAI's error object
        self.extra = extra or {}

    def response(self) -> Response:
        return error_response(self.message, self.status, self.param, self.extra)


class BadRequest(ApiError):
    status = 400


class Unauthorized(ApiError):
    status = 401

    def response(self) -> Response:
        response = super().response()
        response.headers["WWW-Authenticate"] = "Bearer"
        return response


class Forbidden(ApiError):
    status = 403


class NotFound(ApiError):
    status = 404


class PayloadTooLarge(ApiError):
    status = 413


class BodyTimeout(ApiError):
    status = 408


class Unprocessable(ApiError):
    status = 422


class TooManyHeaders(ApiError):
    status = 431


class InternalError(ApiError):
    status = 500


class NotImplementedHere(ApiError):
    status = 501


class BadGateway(ApiError):
    status = 502


class InsufficientStorage(ApiError):
    status = 507


class ServiceUnavailable(ApiError):
    status = 503

    def response(self) -> Response:
        response = super().response()
        response.headers["Retry-After"] = "1"
        response.headers["x-should-retry"] = "true"
        return response


FAILURES: dict[FailureKind, type[ApiError]] = {
    FailureKind.INVALID_REQUEST: BadRequest,
    FailureKind.NOT_FOUND: NotFound,
    FailureKind.REJECTED_REPLY: Unprocessable,
    FailureKind.OUT_OF_MEMORY: ServiceUnavailable,
    FailureKind.UNAVAILABLE: ServiceUnavailable,
    FailureKind.UPSTREAM: BadGateway,
    FailureKind.NO_SPACE: InsufficientStorage,
    FailureKind.INTERNAL: InternalError,
}


def failure_error(kind: FailureKind, message: str, extra: dict[str, Any] | None = None) -> ApiError:
    """The HTTP error for a failure the engine or the store reported."""
    return FAILURES[kind](message, extra=extra)


OPENAI_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
    503: "server_error",
}


def openai_error(
    message: str, status: int, param: str | None = None, extra: dict[str, Any] | None = None
) -> dict[str, Any]:
    """OpenAI's error object; ``extra`` keys (a failed reply's ``partial``) go inside it, where
    the official client exposes them as ``error.body``."""
    kind = OPENAI_TYPES.get(status, "api_error")
    return {"error": {"message": message, "type": kind, "param": param, "code": None} | (extra or {})}


ANTHROPIC_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    408: "timeout_error",
    413: "request_too_large",
    422: "invalid_request_error",
    429: "rate_limit_error",
    503: "overloaded_error",
}


def anthropic_error(message: str, status: int, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Anthropic's error object; ``extra`` (a failed reply's ``partial``) goes inside ``error``."""
    kind = ANTHROPIC_TYPES.get(status, "api_error")
    return {"type": "error", "error": {"type": kind, "message": message} | (extra or {})}


def is_anthropic_path(path: str) -> bool:
    return path == "/v1/messages" or path.startswith("/v1/messages/")


def error_response(
    message: str, status: int, param: str | None = None, extra: dict[str, Any] | None = None
) -> Response:
    """``{"error": message, **extra}`` natively, OpenAI's error object under ``/v1/``, Anthropic's
    under ``/v1/messages``."""
    if has_request_context() and is_anthropic_path(request.path):
        response = json_response(anthropic_error(message, status, extra), status)
    elif has_request_context() and request.path.startswith("/v1/"):
        response = json_response(openai_error(message, status, param, extra), status)
    else:
        response = json_response({"error": message} | (extra or {}), status)
    return response


def install_error_handlers(app: Quart) -> None:
    """Render every error, including Quart's own and unexpected ones, as JSON."""

    @app.errorhandler(ApiError)
    async def _api_error(error: ApiError) -> Response:
        return error.response()

    @app.errorhandler(HTTPException)
    async def _http_error(error: HTTPException) -> Response:
        status = error.code or 500
        messages = {404: "404 page not found", 405: "405 method not allowed"}
        message = messages.get(status, error.description or error.name)
        return error_response(message, status)

    @app.errorhandler(Exception)
    async def _unexpected(error: Exception) -> Response:
        log.exception("unhandled error: %s", error)
        return error_response(f"internal server error: {type(error).__name__}", 500)
