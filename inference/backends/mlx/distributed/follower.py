"""Ranks 1.. of a distributed group: hold a shard of each model rank 0 loads, and run its steps.

A follower has no HTTP server and decides nothing. It waits for rank 0's next command
(:mod:`inference.backends.mlx.distributed.link`) and applies it to its own
:class:`~inference.backends.mlx.batch.MlxBatch`: the same sequences join and leave in the same
order, each step reads the prompt chunk rank 0 chose, and each token comes from rank 0
(:class:`~inference.backends.mlx.distributed.sharded.FollowerSampler`). A cancelled request is removed here
by the same command that removes it on rank 0, before the next step.

A model's files are looked for at rank 0's path, then under this machine's store
(``TRILLM_MODELS``) by the same name. When rank 0 is gone the collective fails and the follower
exits with 1; ``STOP`` (rank 0 shutting down) ends it with 0.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from inference.backends.base import ModelLoadError, SamplingParams
from inference.backends.mlx.batch import MlxBatch, PrefixCache
from inference.backends.mlx.distributed.link import Command, Link, LinkBroken, Op
from inference.backends.mlx.distributed.sharded import FollowerSampler, load_shard
from inference.engine.batch import Admission

log = logging.getLogger("trillm.distributed")

# Entries bound the followers' prefix caches, never bytes: a rank whose share of the cache is
# larger than rank 0's must not drop an entry rank 0 still finds.
_UNBOUNDED = 1 << 62


@dataclass
class _Shard:
    model: Any
    tokenizer: Any
    prefix_cache: PrefixCache | None


@dataclass
class _Batch:
    batch: MlxBatch
    steps: int = 0
    joined: dict[int, int] = field(default_factory=dict)  # key -> the step it joined at


class Follower:
    """One follower's models and batches, changed only by rank 0's commands."""

    def __init__(self, link: Link, store: Path) -> None:
        self._link = link
        self._store = store
        self._shards: dict[int, _Shard] = {}
        self._batches: dict[int, _Batch] = {}

    def run(self) -> int:
        """Apply commands until rank 0 stops the group (0) or is lost (1)."""
        while True:
            try:
                command = self._link.receive()
            except LinkBroken as error:
                log.error("rank %d: rank 0 was lost (%s); exiting", self._link.rank, error)
                return 1
            if command.op is Op.STOP:
                log.info("rank %d: rank 0 stopped the group", self._link.rank)
                return 0
            try:
                self.apply(command)
            except LinkBroken as error:
                log.error("rank %d: a peer was lost (%s); exiting", self._link.rank, error)
                return 1
            except Exception:
                # Rank 0 cannot know what this rank did: leave, so that it sees the rank lost.
                log.exception("rank %d: %s failed; leaving the group", self._link.rank, command.op.name)
                return 1

    def apply(self, command: Command) -> None:
        ids = command.ids
        if command.op is Op.LOAD:
            self._load(ids[0], Path(command.text), bool(ids[1]), ids[2])
        elif command.op is Op.UNLOAD:
            shard = self._shards.pop(ids[0], None)
            if shard is not None:
                self._free(shard)
        elif command.op is Op.OPEN:
            self._batches[ids[1]] = _Batch(self._open(self._shards[ids[0]]))
        elif command.op is Op.ADD:
            self._add(self._batches[ids[0]], ids[1], bool(ids[2]), ids[3], ids[4], command.tokens)
        elif command.op is Op.REMOVE:
            entry = self._batches[ids[0]]
            together = len(entry.batch)
            entry.batch.remove(ids[1])
            start = entry.joined.pop(ids[1], entry.steps)
            log.info(
                "rank %d: sequence %d left after %d steps (batch of %d)",
                self._link.rank,
                ids[1],
                entry.steps - start,
                together,
            )
        elif command.op is Op.STEP:
            entry = self._batches[ids[0]]
            entry.batch.step(ids[1])
            entry.steps += 1
        elif command.op is Op.CLOSE:
            self._batches.pop(ids[0]).batch.close()

    def _load(self, model_id: int, path: Path, pipeline: bool, cache_entries: int) -> None:
        local = path if (path / "config.json").is_file() else self._store / path.name
        try:
            model, tokenizer, shares = load_shard(local, self._link, pipeline)
        except ModelLoadError as error:  # every rank reported it; rank 0 fails the request
            log.error("rank %d: loading %s failed: %s", self._link.rank, path.name, error)
            return
        cache = PrefixCache(cache_entries, _UNBOUNDED) if cache_entries > 0 else None
        self._shards[model_id] = _Shard(model, tokenizer, cache)
        log.info("rank %d: holds %d bytes of %s", self._link.rank, shares[self._link.rank], path.name)

    def _open(self, shard: _Shard) -> MlxBatch:
        group = self._link.group
        greedy = FollowerSampler(group)
        return MlxBatch(
            shard.model,
            shard.tokenizer,
            set(shard.tokenizer.eos_token_ids),
            make_sampler=lambda params: greedy if params.temperature <= 0 else FollowerSampler(group),
            make_processors=lambda params, constraint: [],
            prefix_cache=shard.prefix_cache,
        )

    def _add(
        self, entry: _Batch, key: int, greedy: bool, prefill: int, cached: int, prompt: list[int]
    ) -> None:
        params = SamplingParams(temperature=0.0 if greedy else 1.0, prefill_chunk=prefill, logprobs=-1)
        entry.batch.add(Admission(key, prompt, params, lambda: False), cached=cached)
        entry.joined[key] = entry.steps

    @staticmethod
    def _free(shard: _Shard) -> None:
        import gc

        from inference.backends.mlx.backend import free_cached_memory

        shard.model = None
        shard.prefix_cache = None
        gc.collect()
        free_cached_memory()
