"""MLX text models sharded across a distributed group: rank 0's side, and what every rank shares.

Every rank loads only its shard (tensor parallel by default, mlx-lm's ``shard``; pipeline
parallel with ``pipeline``, mlx-lm's ``pipeline``): the same steps as ``mlx_lm.sharded_load``,
with the outcome of every rank gathered, so that one rank's failure is a load error on rank 0
instead of a rank left waiting. Rank 0 serves the model through :class:`ShardedMlxModel`, an
:class:`~inference.backends.mlx.backend.MlxModel` whose batch (:class:`MirroredBatch`) sends
each operation to the other ranks (:mod:`inference.backends.mlx.distributed.link`) before running it on its
own shard; the other ranks run the same :class:`~inference.backends.mlx.batch.MlxBatch`
operations in the same order (:mod:`inference.backends.mlx.distributed.follower`).

Only rank 0 samples. Its sampler (:class:`LeaderSampler`) adds an ``all_sum`` of the sampled
tokens to the step's graph, in which the other ranks contribute zeros (:class:`FollowerSampler`),
so every rank feeds rank 0's tokens back into its shard. The penalties and the grammar mask of
structured output therefore run on rank 0 alone, and no rank depends on the others computing
bit-identical logits. Greedy sequences share one sampler on every rank, as mlx-lm's batch
generator samples a batch sharing one sampler in one call.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from inference.backends.base import ModelInfo, ModelLoadError, ModelUnavailable, SamplingParams
from inference.backends.mlx.backend import CacheSettings, MlxBackend, MlxModel, wedge
from inference.backends.mlx.batch import MlxBatch, make_sampler
from inference.backends.mlx.distributed.group import Ranks
from inference.backends.mlx.distributed.link import Link, LinkBroken, Op
from inference.engine.batch import Admission, StepResult

log = logging.getLogger("trillm.distributed")
_T = TypeVar("_T")


class LeaderSampler:
    """Rank 0: sample with ``inner``, and share the tokens with every rank."""

    def __init__(self, inner: Callable[[Any], Any], group: Any) -> None:
        self._inner = inner
        self._group = group

    def __call__(self, logprobs: Any) -> Any:
        import mlx.core as mx

        return mx.distributed.all_sum(self._inner(logprobs).astype(mx.int32), group=self._group)

    def rewind(self) -> None:
        rewind = getattr(self._inner, "rewind", None)
        if rewind is not None:
            rewind()


class FollowerSampler:
    """The other ranks: take rank 0's tokens. Their zeros depend on the logits, so the ``all_sum``
    runs after the step's forward pass (and its collectives), as on rank 0."""

    def __init__(self, group: Any) -> None:
        self._group = group

    def __call__(self, logprobs: Any) -> Any:
        import mlx.core as mx

        zeros = (mx.argmax(logprobs, axis=-1) * 0).astype(mx.int32)
        return mx.distributed.all_sum(zeros, group=self._group)


def shardable(info: ModelInfo) -> bool:
    """Whether mlx-lm can split this architecture across ranks (tensor parallel)."""
    from mlx_lm.utils import _get_classes

    model_class, _ = _get_classes({"model_type": info.family})
    return hasattr(model_class, "shard")


def load_shard(path: Path, link: Link, pipeline: bool) -> tuple[Any, Any, list[int]]:
    """Every rank: this rank's shard of ``path``, its tokenizer, and each rank's weight bytes.

    Raises :class:`ModelLoadError` naming the ranks that failed (on every rank)."""
    import mlx.core as mx
    from mlx.utils import tree_flatten
    from mlx_lm.utils import load_model, load_tokenizer

    model = tokenizer = None
    problem = ""
    held = 0
    try:
        model, config = load_model(path, lazy=True, strict=False)
        if pipeline:
            if not hasattr(getattr(model, "model", None), "pipeline"):
                raise ValueError(f"mlx-lm cannot split {config.get('model_type')} models into a pipeline")
            model.model.pipeline(link.group)
        else:
            if not hasattr(model, "shard"):
                raise ValueError(f"mlx-lm cannot shard {config.get('model_type')} models")
            model.shard(link.group)
        mx.eval(model.parameters())
        tokenizer = load_tokenizer(path, eos_token_ids=config.get("eos_token_id"))  # type: ignore[no-untyped-call]
        weights: Any = tree_flatten(model.parameters())
        held = sum(int(value.nbytes) for _, value in weights)
    except Exception as error:  # reported by every rank below, so none waits for the others
        problem = f"{type(error).__name__}: {error}"
    problems = link.gather_text(problem)
    shares = link.gather(held)
    failed = [f"rank {rank}: {text}" for rank, text in enumerate(problems) if text]
    if failed:
        raise ModelLoadError("; ".join(failed))
    return model, tokenizer, shares


class MirroredBatch:
    """Rank 0's :class:`~inference.engine.batch.DecodeBatch` of a sharded model: every operation
    goes to the other ranks first. An operation that fails once the others may have started it
    loses the group (they cannot be known to be at the same step any more)."""

    def __init__(self, batch: MlxBatch, ranks: Ranks, batch_id: int) -> None:
        self._batch = batch
        self._ranks = ranks
        self._id = batch_id

    def add(self, admission: Admission) -> int:
        self._ranks.check()
        cached = self._batch.add(admission)  # no collective runs in add: safe before the command
        greedy = int(admission.params.temperature <= 0)
        prefill = max(admission.params.prefill_chunk, 1)
        prompt = list(admission.prompt)
        with self._ranks.watched():
            self._ranks.send(Op.ADD, self._id, admission.key, greedy, prefill, cached, tokens=prompt)
        return cached

    def remove(self, key: int) -> None:
        if self._ranks.lost is None:
            with self._ranks.watched():
                self._ranks.send(Op.REMOVE, self._id, key)
                self._guarded(lambda: self._batch.remove(key))

    def step(self) -> list[tuple[int, StepResult]]:
        prefill = self._batch.prefill_step()
        with self._ranks.watched():
            self._ranks.send(Op.STEP, self._id, prefill)
            return self._guarded(lambda: self._batch.step(prefill))

    def _guarded(self, operation: Callable[[], _T]) -> _T:
        try:
            return operation()
        except Exception as error:
            raise self._ranks.lose(error) from error

    def __len__(self) -> int:
        return len(self._batch)

    def close(self) -> None:
        if self._ranks.lost is None:
            try:
                self._ranks.send(Op.CLOSE, self._id)
                self._batch.close()
            except ModelUnavailable:
                pass


_model_ids = itertools.count(1)
_batch_ids = itertools.count(1)


class ShardedMlxModel(MlxModel):
    """Rank 0's handle on a model whose shards every rank of ``ranks`` holds."""

    def __init__(self, path: Path, cache: CacheSettings, info: ModelInfo, ranks: Ranks) -> None:
        self._ranks = ranks
        self._id = next(_model_ids)
        ranks.send(Op.LOAD, self._id, int(ranks.pipeline), cache.entries, text=str(path))
        try:
            model, tokenizer, self.shares = load_shard(path, ranks.link, ranks.pipeline)
        except LinkBroken as error:
            raise ranks.lose(error) from error
        super().__init__(path, cache, info, loaded=(model, tokenizer))

    def open_batch(self) -> MirroredBatch:  # type: ignore[override]
        group = self._ranks.link.group
        batch_id = next(_batch_ids)
        self._ranks.send(Op.OPEN, self._id, batch_id)
        greedy = LeaderSampler(make_sampler(SamplingParams(temperature=0), self._n_vocab), group)

        def sampler(params: SamplingParams) -> Any:
            if params.temperature <= 0:
                return greedy
            return LeaderSampler(make_sampler(params, self._n_vocab), group)

        return MirroredBatch(self._batch(sampler), self._ranks, batch_id)

    def placement(self) -> dict[str, object]:
        """Where the model lives: for ``/api/ps`` and ``/metrics``."""
        return {
            "ranks": self._ranks.size,
            "strategy": self._ranks.strategy,
            "lost": self._ranks.lost,
            "shares": [
                {"rank": rank, "host": host, "size": size}
                for rank, (host, size) in enumerate(zip(self._ranks.hosts, self.shares, strict=True))
            ],
        }

    def close(self) -> None:
        if self._ranks.lost is None:
            try:
                self._ranks.send(Op.UNLOAD, self._id)
            except ModelUnavailable:
                pass
        super().close()


class ShardedMlxBackend(MlxBackend):
    """The MLX backend of a distributed server's rank 0: text models that mlx-lm can shard are
    split across the group; embedding and vision models, and architectures it cannot shard, are
    held by rank 0 alone."""

    def __init__(self, ranks: Ranks, cache: CacheSettings | None = None, *, openblas: bool = True) -> None:
        super().__init__(cache, openblas=openblas)
        self.ranks = ranks
        ranks.on_lost.append(wedge)  # a collective with the lost rank may never finish

    def text_model(self, path: Path, info: ModelInfo) -> MlxModel:
        if not shardable(info):
            log.warning("%s: mlx-lm cannot shard %s models; rank 0 holds it alone", path.name, info.family)
            return super().text_model(path, info)
        return ShardedMlxModel(path, self.cache, info, self.ranks)

    def release_thread(self) -> None:
        self.ranks.stop()
        super().release_thread()
