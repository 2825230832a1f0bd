"""A log line for each connection Hypercorn closes on its idle/header timeout.

Hypercorn closes a connection that has not sent a complete request within ``keep_alive_timeout``
(trillm's ``TRILLM_HEADER_TIMEOUT``), silently. An operator looking at a slow-client attack, or
at a client that sees its connection dropped, needs to see that it happened: this wraps
Hypercorn's idle-timeout task so that, when the timer (not a shutdown) ends a connection, one
line says so, with the peer and whether a request had begun to arrive.
"""

from __future__ import annotations

import functools
import logging
from typing import Any

log = logging.getLogger("trillm")

_INSTALLED = "_trillm_logs_timeouts"
_WRAPPED = "_idle_timeout"  # the TCPServer method that closes a connection on its timer


def install() -> None:
    """Wrap ``hypercorn.trio.tcp_server.TCPServer._idle_timeout`` once per process."""
    from hypercorn.trio.tcp_server import TCPServer

    original = getattr(TCPServer, _WRAPPED, None)
    if original is None or getattr(original, _INSTALLED, False):
        return  # another Hypercorn layout, or already wrapped

    @functools.wraps(original)
    async def idle_timeout(server: Any) -> None:
        peer = _peer(server)  # (the socket is closed once the original returns)
        await original(server)
        # Reached only when the timer ran out or the server is stopping (a request arriving
        # cancels this task instead).
        if not server.context.terminated.is_set():
            log_timeout(server, peer)

    setattr(idle_timeout, _INSTALLED, True)
    setattr(TCPServer, _WRAPPED, idle_timeout)


def _peer(server: Any) -> str:
    try:
        host, port = server.stream.socket.getpeername()[:2]
    except (AttributeError, OSError, TypeError, ValueError):
        return "a client"
    return f"{host}:{port}"


def log_timeout(server: Any, peer: str) -> None:
    seconds = server.config.keep_alive_timeout
    if _partial_request(server):
        log.warning(
            "header timeout (%gs): closed %s, which had not finished its request headers", seconds, peer
        )
    else:
        log.info("idle timeout (%gs): closed the idle connection from %s", seconds, peer)


def _partial_request(server: Any) -> bool:
    """Whether bytes of a request had arrived on the connection (h11 holds them unparsed)."""
    connection = getattr(getattr(getattr(server, "protocol", None), "protocol", None), "connection", None)
    trailing = getattr(connection, "trailing_data", (b"", False))
    return bool(trailing[0])
