"""Safe defaults at the edge: Host guard, API key, header limit, management switch and CORS.

On a loopback bind a browser page on any site could otherwise reach the server through a DNS
name that resolves to 127.0.0.1; requests whose Host is not local are refused with 403, as Ollama
does (CVE-2024-28224). With ``TRILLM_API_KEY`` set, every route needs the key, as
``Authorization: Bearer KEY`` or ``X-Api-Key: KEY`` (401 otherwise; CORS preflights excepted, since
browsers send them without credentials), except the liveness check ``GET /`` and ``HEAD /``, which
says nothing but that the server runs, as on vLLM and llama-server. A request with more than
``max_headers`` headers gets 431; ``TRILLM_DISABLE_MANAGEMENT`` turns pull, create, copy, delete and blob uploads off (403). CORS
follows Ollama's allow-list plus ``TRILLM_ORIGINS``/``OLLAMA_ORIGINS``.
"""

from __future__ import annotations

import fnmatch
import hmac
import ipaddress
import logging
import socket

from quart import Quart, Response, request
from werkzeug.datastructures import Headers

from app.config import Settings
from app.protocol.errors import Forbidden, TooManyHeaders, Unauthorized

log = logging.getLogger("trillm.http")
MANAGEMENT_ROUTES = ("/api/pull", "/api/create", "/api/copy", "/api/delete", "/api/blobs/")


class InsecureBind(Exception):
    """Serving a non-loopback address without an API key, and without opting out."""


def check_exposure(settings: Settings) -> None:
    """Refuse to serve the network without a key unless the operator says so explicitly."""
    if settings.exposed() and not settings.api_key and not settings.allow_insecure_bind:
        raise InsecureBind(
            f"refusing to listen on {settings.host}, which other machines can reach, without an API "
            "key: set TRILLM_API_KEY (clients send it as 'Authorization: Bearer KEY'), or set "
            "TRILLM_ALLOW_INSECURE_BIND=1 to serve without one"
        )


def presented_key(headers: Headers) -> str:
    """The key a request carries, from ``Authorization: Bearer`` or ``X-Api-Key``."""
    scheme, _, token = headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return headers.get("X-Api-Key", "").strip()


DEFAULT_ORIGINS = (
    "http://localhost", "https://localhost", "http://localhost:*", "https://localhost:*",
    "http://127.0.0.1", "https://127.0.0.1", "http://127.0.0.1:*", "https://127.0.0.1:*",
    "http://0.0.0.0", "https://0.0.0.0", "http://0.0.0.0:*", "https://0.0.0.0:*",
    "app://*", "file://*", "tauri://*", "vscode-webview://*", "vscode-file://*",
)  # fmt: skip
ALLOWED_HEADERS = (
    "Authorization, Content-Type, User-Agent, Accept, X-Requested-With, X-Api-Key, "
    "Anthropic-Version, Anthropic-Beta, Anthropic-Dangerous-Direct-Browser-Access"
)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def host_is_local(header: str) -> bool:
    """Whether a Host header names this machine or a private address."""
    host = header.strip().lower()
    if host.startswith("["):
        host = host[1:].partition("]")[0]
    elif host.count(":") == 1:
        host = host.partition(":")[0]
    if not host:
        return True
    if host in ("localhost", socket.gethostname().lower()):
        return True
    if host.endswith((".localhost", ".local", ".internal")):
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return address.is_loopback or address.is_private or address.is_unspecified


def install(app: Quart, settings: Settings) -> None:
    origins = DEFAULT_ORIGINS + settings.origins
    guard_host = is_loopback(settings.host)

    def origin_allowed(origin: str) -> bool:
        return any(fnmatch.fnmatchcase(origin, pattern) for pattern in origins)

    key = settings.api_key.encode() if settings.api_key else None

    @app.before_request
    async def _guard() -> Response | None:
        if guard_host and not host_is_local(request.headers.get("Host", "")):
            raise Forbidden("forbidden: Host header is not a local address")
        if len(request.headers) > settings.max_headers:
            log.warning(
                "refused a request with %d headers (limit %d)", len(request.headers), settings.max_headers
            )
            raise TooManyHeaders(f"too many request headers (the limit is {settings.max_headers})")
        if request.method == "OPTIONS":
            return Response("", status=204)
        liveness = request.path == "/" and request.method in ("GET", "HEAD")
        if (
            key is not None
            and not liveness
            and not hmac.compare_digest(presented_key(request.headers).encode(), key)
        ):
            raise Unauthorized(
                "unauthorized: this server needs an API key, sent as 'Authorization: Bearer KEY' or 'X-Api-Key: KEY'"
            )
        if not settings.management and request.path.startswith(MANAGEMENT_ROUTES):
            raise Forbidden("model management is disabled on this server (TRILLM_DISABLE_MANAGEMENT)")
        return None

    @app.after_request
    async def _cors(response: Response) -> Response:
        origin = request.headers.get("Origin")
        if origin and origin_allowed(origin):
            response.headers["Access-Control-Allow-Origin"] = origin
            response.headers["Vary"] = "Origin"
            if request.method == "OPTIONS":
                response.headers["Access-Control-Allow-Methods"] = (
                    "GET, POST, PUT, PATCH, DELETE, HEAD, OPTIONS"
                )
                response.headers["Access-Control-Allow-Headers"] = ALLOWED_HEADERS
        return response
