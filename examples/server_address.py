"""Where the examples find the server, and the one line they print when it is not there.

The address is ``--host``, else ``TRILLM_HOST``, else ``OLLAMA_HOST``, else ``127.0.0.1:11434``, in
any of the forms those variables take (``host``, ``host:port``, ``http://host:port``; a server
bound to ``0.0.0.0`` is reached on loopback).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import TypeVar
from urllib.parse import urlsplit

DEFAULT_PORT = 11434
T = TypeVar("T")


def server_url(host: str | None = None) -> str:
    """``http://HOST:PORT`` for ``host`` or the environment's address."""
    raw = host or os.environ.get("TRILLM_HOST") or os.environ.get("OLLAMA_HOST") or "127.0.0.1"
    parts = urlsplit(raw if "://" in raw else f"http://{raw}")
    address = parts.hostname or "127.0.0.1"
    if address in ("0.0.0.0", "::"):
        address = "127.0.0.1"
    address = f"[{address}]" if ":" in address else address
    return f"{parts.scheme or 'http'}://{address}:{parts.port or DEFAULT_PORT}"


def reachable(run: Callable[[], T], url: str) -> T:
    """``run()``, or one line and exit status 1 when nothing answers at ``url``."""
    try:
        return run()
    except Exception as error:  # httpx, openai and ollama each wrap the refused connection
        if not _refused(error):
            raise
        sys.exit(f"error: no server answers at {url} (start one with `trillm serve`, or set TRILLM_HOST)")


def _refused(error: BaseException | None) -> bool:
    while error is not None:
        if isinstance(error, ConnectionError) or type(error).__name__ in (
            "ConnectError",
            "APIConnectionError",
        ):
            return True
        error = error.__cause__ or error.__context__
    return False
