"""Rank 0's view of its distributed group: the link to the other ranks and whether one was lost.

A rank is lost when a collective fails (the ring backend fails it at once when a peer's socket
closes) or, for the ranks this server launched itself, when its process exits. From then on
every operation on a model sharded across the group raises
:class:`~inference.backends.base.ModelUnavailable` naming the lost rank (503 for the client);
models held by rank 0 alone keep serving. The other ranks are stopped: they cannot be trusted to
be at the same step as rank 0 again. Service comes back by restarting the group.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from inference.backends.base import ModelUnavailable
from inference.backends.mlx.distributed.link import Link, LinkBroken, Op

if TYPE_CHECKING:
    from inference.backends.mlx.distributed.launcher import Followers

log = logging.getLogger("trillm.distributed")

RESTART_HINT = "restart the group (stop this server and start it again with --distributed) to serve it again"


@dataclass
class Ranks:
    """The group as rank 0 holds it: ``hosts[r]`` names rank ``r``; ``followers`` are the other
    ranks' processes when this server started them (``None`` under ``mlx.launch``)."""

    link: Link
    hosts: list[str]
    pipeline: bool = False
    followers: Followers | None = None
    # A batch operation that takes longer than this means a rank cannot be reached (a peer that
    # vanished without closing its connection: the ring would wait on TCP for many minutes).
    step_timeout: float = 60.0
    lost: str | None = None
    # Called (from any thread) once a rank is lost: the engine's watch for a stuck worker.
    on_lost: list[Callable[[], None]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _busy_since: float | None = None

    def __post_init__(self) -> None:
        if self.followers is not None:
            self.followers.on_exit = self._exited
        threading.Thread(target=self._watch, name="rank-watch", daemon=True).start()

    @contextmanager
    def watched(self) -> Iterator[None]:
        """Around a batch operation (its command and its collectives): one that does not finish
        within ``step_timeout`` loses the group."""
        self._busy_since = time.monotonic()
        try:
            yield
        finally:
            self._busy_since = None

    def _watch(self) -> None:
        while self.lost is None:
            time.sleep(min(0.5, self.step_timeout / 4))
            since = self._busy_since
            if since is not None and time.monotonic() - since > self.step_timeout:
                who = f"rank 1 ({self.hosts[1]})" if self.size == 2 else "a rank"
                self._mark(f"{who} of the distributed group did not answer within {self.step_timeout:g} s")
                if self.followers is not None:
                    self.followers.kill()

    @property
    def size(self) -> int:
        return self.link.size

    @property
    def strategy(self) -> str:
        return "pipeline" if self.pipeline else "tensor"

    def check(self) -> None:
        """Raise :class:`ModelUnavailable` if a rank was lost."""
        if self.lost is not None:
            raise ModelUnavailable(self.lost)

    def send(self, op: Op, *ids: int, tokens: list[int] | None = None, text: str = "") -> None:
        self.check()
        try:
            self.link.send(op, *ids, tokens=tokens, text=text)
        except LinkBroken as error:
            raise self.lose(error) from error

    def lose(self, error: BaseException) -> ModelUnavailable:
        """After a collective failed: find the lost rank, stop the others; the error to raise."""
        if self.lost is None:
            gone = self.followers.wait_for_exit(2.0) if self.followers is not None else None
            if gone is None:
                self._mark(f"a rank of the distributed group was lost ({error})")
            else:
                self._exited(*gone)
        if self.followers is not None:
            self.followers.kill()
        assert self.lost is not None
        return ModelUnavailable(self.lost)

    def _exited(self, rank: int, code: int | None) -> None:
        how = "it could not be reached" if code is None else f"its process exited with code {code}"
        self._mark(f"rank {rank} ({self.hosts[rank]}) of the distributed group was lost: {how}")

    def _mark(self, what: str) -> None:
        with self._lock:
            if self.lost is not None:
                return
            self.lost = f"{what}; the model sharded across the group cannot run: {RESTART_HINT}"
        log.error("%s", self.lost)
        for notify in self.on_lost:
            notify()

    def stop(self) -> None:
        """At shutdown: tell the other ranks to exit (they are waiting for a command)."""
        if self.lost is None:
            try:
                self.send(Op.STOP)
            except ModelUnavailable:
                pass
        if self.followers is not None:
            self.followers.wait(10.0)
            self.followers.terminate()
