"""Opt-in Prometheus metrics at ``GET /metrics`` (``TRILLM_METRICS=1``), with vLLM's names.

Per-request figures (tokens, time to first token, inter-token gaps, end-to-end and queue time,
outcomes) are observed from each finished job's report; gauges and the load/unload counters are
read from the engine at scrape time. Every metric is prefixed ``trillm:`` and labelled with
``model_name`` where it concerns one model.
"""

from __future__ import annotations

from collections.abc import Iterator

import trio
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector
from quart import Quart, Response

from inference.backends.base import placement_of
from inference.engine.job import JobReport
from inference.engine.scheduler import Engine

LATENCY_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 40, 80)
TOKEN_BUCKETS = (1, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768)


def trio_task_count() -> int:
    """How many tasks the running Trio loop has (a leak shows as growth)."""

    def walk(task: trio.lowlevel.Task) -> int:
        return 1 + sum(walk(child) for nursery in task.child_nurseries for child in nursery.child_tasks)

    root = trio.lowlevel.current_root_task()
    return 0 if root is None else walk(root)


class EngineCollector(Collector):
    """Gauges and counters the engine keeps itself, read when Prometheus scrapes."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        stats = self._engine.statistics()
        yield GaugeMetricFamily("trillm:num_requests_running", "Requests generating now.", stats.active)
        yield GaugeMetricFamily("trillm:num_requests_waiting", "Requests waiting in the queue.", stats.queued)
        yield GaugeMetricFamily("trillm:models_loaded", "Models in memory.", stats.loaded)
        yield GaugeMetricFamily(
            "trillm:queue_capacity", "Waiting requests allowed before 503.", self._engine.max_queue
        )
        yield GaugeMetricFamily(
            "trillm:trio_tasks", "Tasks in the server's Trio task tree.", trio_task_count()
        )
        yield CounterMetricFamily("trillm:model_loads", "Models loaded.", stats.loads)
        yield CounterMetricFamily("trillm:model_unloads", "Models unloaded.", stats.unloads)
        yield from self._ranks()

    def _ranks(self) -> Iterator[GaugeMetricFamily]:
        """Per rank of a distributed model: its share of the weights, and whether it serves."""
        labels = ["model_name", "rank", "host"]
        held = GaugeMetricFamily(
            "trillm:distributed_rank_weight_bytes", "Weight bytes each rank holds.", labels=labels
        )
        up = GaugeMetricFamily(
            "trillm:distributed_rank_up", "1 while the rank serves, 0 once lost.", labels=labels
        )
        for resident in self._engine.resident():
            placement = placement_of(resident.model)
            if placement is None:
                continue
            shares = placement["shares"]
            assert isinstance(shares, list)
            for share in shares:
                names = [resident.name, str(share["rank"]), str(share["host"])]
                held.add_metric(names, share["size"])
                up.add_metric(names, 1 if share["rank"] == 0 or placement["lost"] is None else 0)
        yield held
        yield up


class RequestMetrics:
    """Histograms and counters fed by each finished job (see :meth:`observe`)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        label = ["model_name"]

        def histogram(name: str, text: str, buckets: tuple[float, ...]) -> Histogram:
            return Histogram(f"trillm:{name}", text, label, buckets=buckets, registry=registry)

        def counter(name: str, text: str, labels: list[str] = label) -> Counter:
            return Counter(f"trillm:{name}", text, labels, registry=registry)

        self.prompt_tokens = counter("prompt_tokens", "Prompt tokens processed.")
        self.generation_tokens = counter("generation_tokens", "Tokens generated.")
        self.cache_queries = counter("prefix_cache_queries", "Prompt tokens looked up in the prefix cache.")
        self.cache_hits = counter("prefix_cache_hits", "Prompt tokens found in the prefix cache.")
        self.success = counter("request_success", "Requests finished.", ["model_name", "finished_reason"])
        self.cancelled = counter("request_cancelled", "Requests whose client went away.")
        self.failed = counter("request_failed", "Requests that ended with an error.")
        self.ttft = histogram("time_to_first_token_seconds", "Time to first token.", LATENCY_BUCKETS)
        self.itl = histogram("inter_token_latency_seconds", "Time between tokens.", LATENCY_BUCKETS)
        self.e2e = histogram("e2e_request_latency_seconds", "Request latency, end to end.", LATENCY_BUCKETS)
        self.queue = histogram(
            "request_queue_time_seconds", "Time spent waiting in the queue.", LATENCY_BUCKETS
        )
        self.prompt_size = histogram("request_prompt_tokens", "Prompt tokens per request.", TOKEN_BUCKETS)
        self.generation_size = histogram("request_generation_tokens", "Tokens per request.", TOKEN_BUCKETS)

    def observe(self, report: JobReport) -> None:
        model = report.model
        if report.kind not in ("generate", "embed"):
            return  # loads and unloads are counted by the engine
        self.prompt_tokens.labels(model).inc(report.prompt_tokens)
        self.generation_tokens.labels(model).inc(report.generated_tokens)
        if report.batch_size:  # it joined a batch, so the prefix cache was asked
            self.cache_queries.labels(model).inc(report.prompt_tokens)
            self.cache_hits.labels(model).inc(report.cached_tokens)
        self.e2e.labels(model).observe(report.total_seconds)
        self.queue.labels(model).observe(report.queue_seconds)
        if report.outcome.startswith("cancelled"):
            self.cancelled.labels(model).inc()
            return
        if report.outcome != "done":
            self.failed.labels(model).inc()
            return
        self.success.labels(model, report.done_reason).inc()
        self.prompt_size.labels(model).observe(report.prompt_tokens)
        self.generation_size.labels(model).observe(report.generated_tokens)
        if report.first_token_seconds is not None:
            self.ttft.labels(model).observe(report.first_token_seconds)
        itl = self.itl.labels(model)
        for gap in report.token_gaps:
            itl.observe(gap)


def install(app: Quart, engine: Engine) -> None:
    registry = CollectorRegistry()
    registry.register(EngineCollector(engine))
    requests = RequestMetrics(registry)
    engine.observers.append(requests.observe)

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)
