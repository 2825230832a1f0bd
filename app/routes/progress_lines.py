"""Long store operations (pull, create) run on a thread and report progress lines.

``progress_response`` starts the blocking ``work`` on a worker thread in the application's
nursery and answers with its progress: as an NDJSON stream (``{"status": ...}`` lines, then
``{"status": "success"}`` or an ``{"error": ...}`` line), or with ``stream: false`` as the last
progress object alone (an error gets its status). When the client goes away, ``should_stop``
turns true and the work stops at its next check, keeping what it has done for a later retry.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import AsyncIterator, Callable
from dataclasses import asdict
from typing import Any

import trio
from quart import Response, current_app

from app.protocol.errors import ApiError, BadRequest, InternalError, failure_error
from app.protocol.ndjson import NDJSON, json_response, line
from inference.store.model_store import StoreError
from inference.store.pull import PullCancelled, PullError, PullProgress

log = logging.getLogger("trillm.store")

Report = Callable[[PullProgress], None]
Work = Callable[[Report, Callable[[], bool]], object]


def progress_object(progress: PullProgress) -> dict[str, Any]:
    """Ollama leaves zero and empty fields out, so early lines lack ``completed``."""
    return {key: value for key, value in asdict(progress).items() if value}


async def progress_response(work: Work, *, stream: bool) -> Response:
    send, receive = trio.open_memory_channel[dict[str, Any] | ApiError](math.inf)
    stop = threading.Event()
    token = trio.lowlevel.current_trio_token()

    def report(progress: PullProgress) -> None:
        try:
            trio.from_thread.run_sync(send.send_nowait, progress_object(progress), trio_token=token)
        except (trio.RunFinishedError, trio.ClosedResourceError, trio.BrokenResourceError):
            pass  # the reader is gone; the work notices through should_stop

    def run() -> ApiError | None:
        try:
            work(report, stop.is_set)
        except PullCancelled:
            return None
        except PullError as error:
            return failure_error(error.kind, str(error))
        except StoreError as error:
            return BadRequest(str(error))
        except Exception as error:
            log.exception("store operation failed")
            return InternalError(f"{type(error).__name__}: {error}")
        return None

    async def drive() -> None:
        async with send:
            failure = await trio.to_thread.run_sync(run, abandon_on_cancel=True)
            if failure is not None:
                send.send_nowait(failure)

    current_app.nursery.start_soon(drive)  # type: ignore[attr-defined]

    if not stream:
        last: dict[str, Any] | ApiError = {}
        try:
            async with receive:
                async for item in receive:
                    last = item
        finally:
            stop.set()
        if isinstance(last, ApiError):
            return last.response()
        return json_response(last)

    async def lines() -> AsyncIterator[bytes]:
        try:
            async with receive:
                async for item in receive:
                    # An error after the first line: the HTTP status is already sent.
                    yield line({"error": item.message} if isinstance(item, ApiError) else item)
        finally:
            stop.set()

    return Response(lines(), content_type=NDJSON)
