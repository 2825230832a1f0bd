"""Safe defaults at the edge: the DNS-rebinding Host guard and the CORS allow-list.

On a loopback bind a browser page on any site could otherwise reach the server through a DNS
name that resolves to 127.0.0.1; requests whose Host is not local are refused with 403, as Ollama
does (CVE-2024-28224). CORS follows Ollama's allow-list plus ``TRILLM_ORIGINS``/``OLLAMA_ORIGINS``.
"""

from __future__ import annotations

import fnmatch
import ipaddress
import socket

from quart import Quart, Response, request

from app.config import Settings
from app.ndjson import json_response

DEFAULT_ORIGINS = (
    "http://localhost", "https://localhost", "http://localhost:*", "https://localhost:*",
    "http://127.0.0.1", "https://127.0.0.1", "http://127.0.0.1:*", "https://127.0.0.1:*",
    "http://0.0.0.0", "https://0.0.0.0", "http://0.0.0.0:*", "https://0.0.0.0:*",
    "app://*", "file://*", "tauri://*", "vscode-webview://*", "vscode-file://*",
)  # fmt: skip
ALLOWED_HEADERS = "Authorization, Content-Type, User-Agent, Accept, X-Requested-With, X-Api-Key"


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

    @app.before_request
    async def _guard() -> Response | None:
        if guard_host and not host_is_local(request.headers.get("Host", "")):
            return json_response({"error": "forbidden: Host header is not a local address"}, 403)
        if request.method == "OPTIONS":
            return Response("", status=204)
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
