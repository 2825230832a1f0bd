"""One dedicated, long-lived thread for all backend work.

MLX streams are thread-local (mlx-lm#1181), so every load and every decode step must happen on
the same OS thread; Trio's thread cache gives no such guarantee. :class:`WorkerThread` owns that
thread and lets Trio code ``await worker.run(fn, *args)``.

Cancellation: a call that has started cannot be interrupted from outside; ``run`` waits for it
under a shield. Callers make ``fn`` cooperative (it polls a flag) so the wait is short. A call
that runs for long (the engine's batch loop) lets later calls in with :meth:`run_waiting`.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

import outcome
import trio

T = TypeVar("T")

_STOP = object()


class WorkerThread:
    """A single OS thread running submitted callables one after another, in order."""

    def __init__(self, name: str = "trillm-worker") -> None:
        self._inbox: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._started = False

    def start(self) -> None:
        self._thread.start()
        self._started = True

    def stop(self) -> None:
        """Ask the thread to exit after the call in progress; does not wait."""
        if self._started:
            self._inbox.put(_STOP)

    def join(self, seconds: float) -> None:
        if self._started:
            self._thread.join(seconds)

    @property
    def ident(self) -> int | None:
        return self._thread.ident

    def _loop(self) -> None:
        while True:
            item = self._inbox.get()
            if item is _STOP:
                return
            fn, args, done = item
            result = outcome.capture(fn, *args)
            done(result)

    def run_waiting(self) -> None:
        """On the worker thread, inside a long call: run the calls submitted meanwhile.

        A call that loops for a long time (the engine's batch loop) calls this between steps, so
        short control calls (unload, expiry) do not wait for it to return.
        """
        while True:
            try:
                item = self._inbox.get_nowait()
            except queue.Empty:
                return
            if item is _STOP:
                self._inbox.put(_STOP)  # for the main loop, once the long call returns
                return
            fn, args, done = item
            done(outcome.capture(fn, *args))

    async def run(self, fn: Callable[..., T], *args: object) -> T:
        """Run ``fn(*args)`` on the worker thread and return its result (or raise its error)."""
        token = trio.lowlevel.current_trio_token()
        finished = trio.Event()
        box: list[outcome.Outcome[T]] = []

        def done(result: outcome.Outcome[T]) -> None:
            box.append(result)
            try:
                token.run_sync_soon(finished.set)
            except trio.RunFinishedError:
                pass

        self._inbox.put((fn, args, done))
        with trio.CancelScope(shield=True):
            await finished.wait()
        return box[0].unwrap()
