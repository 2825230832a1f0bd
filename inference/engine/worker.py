"""One dedicated, long-lived thread for all backend work.

MLX streams are thread-local (mlx-lm#1181), so every load and every decode step must happen on
the same OS thread; Trio's thread cache gives no such guarantee. :class:`WorkerThread` owns that
thread and lets Trio code ``await worker.run(fn, *args)``.

Cancellation: a call that has started cannot be interrupted from outside; ``run`` waits for it
under a shield. Callers make ``fn`` cooperative (it polls a flag) so the wait is short. A call
that runs for long (the engine's batch loop) lets later calls in with :meth:`run_waiting`.

A call stuck for good in native code (a distributed collective whose peer died without MLX
noticing) can be given up with :meth:`abandon`: its waiter gets an error, and the thread ends if
the call ever returns. The engine then goes on with a new worker thread.
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
        self.busy = False  # a call is in progress
        self.abandoned = False
        self._waiters: list[Callable[[outcome.Outcome[Any]], None]] = []

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

    @property
    def current(self) -> bool:
        """Whether the calling thread is this worker's (and it was not abandoned)."""
        return threading.current_thread() is self._thread and not self.abandoned

    def _loop(self) -> None:
        while not self.abandoned:
            item = self._inbox.get()
            if item is _STOP:
                return
            fn, args, done = item
            self.busy = True
            result = outcome.capture(fn, *args)
            self.busy = False
            done(result)

    def abandon(self, error: BaseException) -> None:
        """Give up on this thread: every call waiting on it fails with ``error`` (the Trio thread)."""
        self.abandoned = True
        waiters, self._waiters = self._waiters, []
        for done in waiters:
            done(outcome.Error(error))

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
            if box:
                return  # abandoned first
            box.append(result)
            try:
                token.run_sync_soon(finished.set)
            except trio.RunFinishedError:
                pass

        self._waiters.append(done)
        self._inbox.put((fn, args, done))
        try:
            with trio.CancelScope(shield=True):
                await finished.wait()
        finally:
            if done in self._waiters:
                self._waiters.remove(done)
        return box[0].unwrap()
