"""The HTTP errors the API returns, mapped to responses in one place.

Every error is ``{"error": "<message>"}`` with the status Ollama uses::

    ApiError (status, message)
    ├── BadRequest          400  malformed body, field or option
    ├── Forbidden           403  non-local Host on a loopback bind
    ├── NotFound            404  unknown model or route
    ├── BodyTimeout         408  body not sent in time
    ├── PayloadTooLarge     413  body over the cap
    ├── ServiceUnavailable  503  queue full (with Retry-After)
    └── (500)                    anything unexpected, logged with its traceback

Under ``/v1/`` the same errors take OpenAI's shape, ``{"error": {"message", "type", "param",
"code"}}``, with the statuses the official client maps to its exception classes.
"""

from __future__ import annotations

import logging
from typing import Any

from quart import Quart, Response, has_request_context, request
from werkzeug.exceptions import HTTPException

from app.protocol.ndjson import json_response

log = logging.getLogger("trillm.http")


class ApiError(Exception):
    """An error with a status and a message for the client."""

    status = 500

    def __init__(
        self, message: str, status: int | None = None, *, extra: dict[str, Any] | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.extra = extra or {}
        if status is not None:
            self.status = status

    param: str | None = None

    def response(self) -> Response:
        return error_response(self.message, self.status, self.param, self.extra)


class BadRequest(ApiError):
    status = 400


class Forbidden(ApiError):
    status = 403


class NotFound(ApiError):
    status = 404


class PayloadTooLarge(ApiError):
    status = 413


class BodyTimeout(ApiError):
    status = 408


class ServiceUnavailable(ApiError):
    status = 503

    def response(self) -> Response:
        response = super().response()
        response.headers["Retry-After"] = "1"
        response.headers["x-should-retry"] = "true"
        return response


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


def error_response(
    message: str, status: int, param: str | None = None, extra: dict[str, Any] | None = None
) -> Response:
    """``{"error": message, **extra}`` natively, OpenAI's error object under ``/v1/``."""
    if has_request_context() and request.path.startswith("/v1/"):
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
