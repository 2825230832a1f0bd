"""Request bodies a route answered without reading.

Some requests are answered before their body is read: a CORS preflight, a refused Host or key, a
405, a 404 for an unknown path, a 413. If the body then arrives after the response, Hypercorn
(under Quart-Trio) stalls the connection: a client's next request on it is never answered, and a
connection told to close stays half-open. So before such a response goes out, a body small enough
to be worth it is read to its end, and the connection carries on as usual; one too large or too
slow to read is left, and the response says ``Connection: close``.
"""

from __future__ import annotations

from quart import Quart, Response, current_app, g, request

from app.protocol.errors import BodyTimeout
from app.protocol.fields import body_chunks

# Bodies up to this size are read to their end before answering a request that did not use them.
DRAIN_LIMIT = 1 << 20


def body_left_unread() -> bool:
    """Whether the request sent a body this server has not read to its end."""
    sent = bool(request.content_length) or "chunked" in request.headers.get("Transfer-Encoding", "")
    return sent and not g.get("body_read", False)


async def _read_rest() -> bool:
    """Read the rest of a small body of known length; False when it is too large or too slow."""
    limit = min(DRAIN_LIMIT, current_app.config["TRILLM_MAX_BODY_BYTES"])
    if request.content_length is None or request.content_length > limit:
        return False  # (a body over the cap is never read whole)
    try:
        async for _ in body_chunks():
            pass
    except BodyTimeout:
        return False
    return True


def install(app: Quart) -> None:
    """Check every response, whatever answered it (a route, a guard or an error handler)."""

    @app.after_request
    async def _finish_body(response: Response) -> Response:
        if body_left_unread() and not await _read_rest():
            response.headers["Connection"] = "close"
        return response
