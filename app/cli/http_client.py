"""The command line's side of HTTP: finding the server, calling it, and turning failures into words.

Every ``trillm`` command except ``serve`` talks to a running server, as ``ollama`` does. The first
call checks that the server answers (``HEAD /``) and says plainly when it does not; an error the
server sends is shown as its message, never as a traceback.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any

import httpx

from app.config import HOST, parse_host


class CliError(Exception):
    """A failure to show the user as ``Error: <message>`` (exit status 1)."""


def base_url(host: str | None) -> str:
    try:  # only the address matters here: another variable's bad value is the server's problem
        address, port = parse_host(host or HOST.read() or "")
    except ValueError as error:
        raise CliError(f"invalid server address {host or HOST.read()!r}: expected host[:port]") from error
    if address in ("0.0.0.0", "::", ""):
        address = "127.0.0.1"  # a server bound to every address answers on loopback
    return f"http://[{address}]:{port}" if ":" in address else f"http://{address}:{port}"


def server_message(response: httpx.Response) -> str:
    """The server's ``error`` text, or the status line when the body has none."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("error"), str):
        return str(body["error"])
    return f"{response.status_code} {response.reason_phrase}"


class Client:
    """A blocking client for one server; ``check()`` first, then the calls."""

    def __init__(self, host: str | None) -> None:
        self.url = base_url(host)
        key = os.environ.get("TRILLM_API_KEY")
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self.http = httpx.Client(base_url=self.url, headers=headers, timeout=httpx.Timeout(30.0, read=None))

    def check(self) -> None:
        try:
            self.http.head("/", timeout=5.0)
        except httpx.HTTPError as error:
            raise CliError(
                f"could not connect to a trillm server at {self.url} ({error.__class__.__name__}); "
                "start one with `trillm serve`, or point TRILLM_HOST at it"
            ) from error

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> httpx.Response:
        try:
            response = self.http.request(method, path, json=body)
        except httpx.HTTPError as error:
            raise CliError(f"the server at {self.url} stopped answering: {error}") from error
        if response.is_error:
            raise CliError(server_message(response))
        return response

    def stream(self, path: str, body: dict[str, Any]) -> Iterator[dict[str, Any]]:
        """The NDJSON objects of a streamed reply; an ``error`` line becomes a :class:`CliError`."""
        try:
            with self.http.stream("POST", path, json=body) as response:
                if response.is_error:
                    response.read()
                    raise CliError(server_message(response))
                for raw in response.iter_lines():
                    if not raw.strip():
                        continue
                    part = json.loads(raw)
                    if "error" in part:
                        raise CliError(str(part["error"]))
                    yield part
        except httpx.HTTPError as error:
            raise CliError(f"the server at {self.url} stopped answering: {error}") from error

    def close(self) -> None:
        self.http.close()
