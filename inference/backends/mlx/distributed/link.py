"""The commands rank 0 sends to the other ranks of a distributed group, over MLX's own collectives.

Every rank holds a shard of the model, so every rank must run the same forward passes in the same
order. Rank 0 decides everything (which sequences join and leave a batch, how much of a prompt a
step reads, which token is sampled); before each such operation it sends a :class:`Command`, and the
other ranks (:mod:`inference.backends.mlx.distributed.follower`) apply it to their own shard.

A command is a fixed header and, when it needs one, a payload of tokens or text, each sent with one
``all_sum`` in which rank 0 contributes the values and the other ranks zeros (what
``mlx_lm.server`` does to share its requests). No transport of our own: what reaches the peers goes
where the model's own collectives go (ring over TCP, MPI or JACCL). The collectives run on
mlx-lm's ``generation_stream``, the stream the forward passes run on, so that the commands and the
model's collectives keep one order on every rank.

When a peer is lost, the ring backend fails the collective (``RuntimeError``: "connection to a peer
was lost") instead of hanging; :class:`Link` turns any such failure into :class:`LinkBroken`.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

import numpy as np

_HEADER = 8  # op, token count, text bytes, five integers


class Op(enum.IntEnum):
    """What a command asks the other ranks to do."""

    LOAD = 1  # ids: model, pipeline, prefix cache entries; text: the model's path
    UNLOAD = 2  # ids: model
    OPEN = 3  # ids: model, batch
    ADD = 4  # ids: batch, key, greedy, prefill chunk, cached tokens; tokens: the prompt
    REMOVE = 5  # ids: batch, key
    STEP = 6  # ids: batch, prefill step
    CLOSE = 7  # ids: batch
    STOP = 8  # the server is shutting down: exit


@dataclass(frozen=True)
class Command:
    op: Op
    ids: tuple[int, ...]
    tokens: list[int]
    text: str


class LinkBroken(Exception):
    """A collective failed: a peer is gone (or the ranks no longer agree on what comes next)."""


class Link:
    """Rank 0's commands to the other ranks of ``group`` (an ``mx.distributed.Group``)."""

    def __init__(self, group: Any) -> None:
        self.group = group
        self.rank = int(group.rank())
        self.size = int(group.size())

    def send(self, op: Op, *ids: int, tokens: list[int] | None = None, text: str = "") -> None:
        """Rank 0: send one command to every other rank."""
        data = text.encode()
        header = np.zeros(_HEADER, dtype=np.int32)
        header[:3] = (int(op), len(tokens or ()), len(data))
        header[3 : 3 + len(ids)] = ids
        self._sum(header)
        if tokens:
            self._sum(np.asarray(tokens, dtype=np.int32))
        if data:
            self._sum(np.frombuffer(data, dtype=np.uint8))

    def receive(self) -> Command:
        """Another rank: wait for rank 0's next command."""
        header = self._sum(np.zeros(_HEADER, dtype=np.int32))
        op, n_tokens, n_bytes = (int(v) for v in header[:3])
        tokens = self._sum(np.zeros(n_tokens, dtype=np.int32)).tolist() if n_tokens else []
        text = self._sum(np.zeros(n_bytes, dtype=np.uint8)).tobytes().decode() if n_bytes else ""
        return Command(Op(op), tuple(int(v) for v in header[3:]), tokens, text)

    def gather(self, value: int) -> list[int]:
        """Every rank: each rank's ``value``, in rank order."""
        slots = np.zeros(self.size, dtype=np.int64)
        slots[self.rank] = value
        return [int(v) for v in self._sum(slots)]

    def gather_text(self, text: str, width: int = 1024) -> list[str]:
        """Every rank: each rank's ``text`` (cut to ``width`` bytes), in rank order."""
        slots = np.zeros((self.size, width), dtype=np.uint8)
        data = text.encode()[:width]
        slots[self.rank, : len(data)] = np.frombuffer(data, dtype=np.uint8)
        summed = self._sum(slots)
        return [bytes(row).rstrip(b"\0").decode(errors="replace") for row in summed]

    def _sum(self, values: np.ndarray) -> np.ndarray:
        import mlx.core as mx
        from mlx_lm.generate import generation_stream

        try:
            with mx.stream(generation_stream):
                summed = mx.distributed.all_sum(mx.array(values), group=self.group)
                mx.eval(summed)
        except RuntimeError as error:
            raise LinkBroken(str(error)) from error
        return np.array(summed, copy=True)
