"""The engine: admission, FIFO scheduling, model residency and cancellation.

One :class:`Engine` lives in the application's nursery (``await nursery.start(engine.run)``). It
admits requests into a bounded FIFO queue, runs them one at a time on the dedicated worker thread
(batching comes later), keeps loaded models resident for their ``keep_alive`` and unloads them when
it runs out, or, when ``max_loaded`` models are in memory and another is needed, unloads the one
used least recently. A request is linked to its generation only by its
:class:`~inference.job.Job`; closing the job is what cancels the work, wherever it is.
"""

from __future__ import annotations

import logging
import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import trio

from inference.backend import Backend, LoadedModel, ModelInfo
from inference.generation import run_generation
from inference.job import Failed, Finished, GenerationRequest, Job, JobReport
from inference.worker import WorkerThread

log = logging.getLogger("trillm.engine")

SHUTDOWN_MESSAGE = "the server is shutting down"
BUSY_MESSAGE = "server busy, please try again.  maximum pending requests exceeded"


class EngineBusy(Exception):
    """Raised by :meth:`Engine.submit_nowait` when the wait queue is full (HTTP 503)."""


@dataclass
class Resident:
    """A loaded model and when it may be unloaded (``math.inf`` = never)."""

    name: str
    path: Path
    model: LoadedModel
    info: ModelInfo
    expires_at: float
    busy: int = 0
    last_used: float = 0.0


@dataclass(frozen=True)
class EngineStatistics:
    """A snapshot for health checks and tests."""

    queued: int
    active: int
    loaded: int
    jobs_done: int
    loads: int = 0
    unloads: int = 0


class Engine:
    """Schedules generations for every model; see the module docstring."""

    def __init__(
        self,
        backends: list[Backend],
        *,
        max_queue: int = 512,
        default_keep_alive: float = 300.0,
        max_loaded: int = 3,
    ) -> None:
        self._backends = backends
        self.max_queue = max_queue
        self.max_loaded = max(1, max_loaded)
        self.default_keep_alive = default_keep_alive
        self._pending: deque[Job] = deque()
        self._wakeup = trio.Event()
        self._residency_changed = trio.Event()
        self._active: Job | None = None
        self._resident: dict[str, Resident] = {}
        self._worker = WorkerThread()
        self._jobs_done = 0
        self._loads = 0
        self._unloads = 0
        self.history: deque[JobReport] = deque(maxlen=1024)
        # Called on the Trio thread with each finished job's report (request logs, metrics).
        self.observers: list[Callable[[JobReport], None]] = [log_report]

    # -- lifecycle ---------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Serve until cancelled; ready (``started``) once the worker thread is running."""
        self._worker.start()
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._schedule_loop)
                nursery.start_soon(self._expiry_loop)
                task_status.started()
                try:
                    await trio.sleep_forever()
                finally:
                    # Before the nursery waits for the scheduler: stop the job on the thread.
                    self.abort_all()
        finally:
            with trio.CancelScope(shield=True):
                await self._worker.run(self._unload_all)
            self._worker.stop()

    def abort_all(self, message: str = SHUTDOWN_MESSAGE) -> None:
        """End every queued and running job with an error event for its client."""
        for job in [*self._pending, *([self._active] if self._active else [])]:
            job.abort(message)
        self._pending.clear()

    async def drain(self, seconds: float) -> None:
        """Give running requests ``seconds`` to finish, then abort what is left."""
        await trio.sleep(seconds)
        if self._active or self._pending:
            log.warning("shutdown grace of %.1fs ran out: aborting unfinished requests", seconds)
        self.abort_all()

    def statistics(self) -> EngineStatistics:
        return EngineStatistics(
            queued=len(self._pending),
            active=0 if self._active is None else 1,
            loaded=len(self._resident),
            jobs_done=self._jobs_done,
            loads=self._loads,
            unloads=self._unloads,
        )

    async def unload(self, name: str) -> None:
        """Unload ``name`` if it is loaded (after the job running now, if any, ends)."""
        await self._worker.run(self._unload, name)
        self._residency_changed.set()

    def resident(self) -> list[Resident]:
        """Models in memory now, most recently expiring first."""
        return sorted(self._snapshot(), key=lambda r: -r.expires_at)

    def _snapshot(self) -> list[Resident]:
        # The worker thread loads and unloads; list() copies the values in one step under the GIL.
        return list(self._resident.values())

    # -- admission ---------------------------------------------------------------------------

    def submit_nowait(self, request: GenerationRequest) -> Job:
        """Queue ``request``; raises :class:`EngineBusy` when the queue is full."""
        if len(self._pending) >= self.max_queue:
            raise EngineBusy(BUSY_MESSAGE)
        job = Job(request, on_close=self._forget)
        self._pending.append(job)
        self._wakeup.set()
        return job

    def _forget(self, job: Job) -> None:
        try:
            self._pending.remove(job)
        except ValueError:
            return  # already running or finished: the thread sees the cancel flag
        job.report.outcome = "cancelled while queued"
        self._record(job)
        job.end_unheard()

    # -- scheduling --------------------------------------------------------------------------

    async def _schedule_loop(self) -> None:
        while True:
            if not self._pending:
                self._wakeup = trio.Event()
                await self._wakeup.wait()
                continue
            job = self._pending.popleft()
            self._active = job
            try:
                await self._worker.run(self._execute, job)
            except Exception as error:  # a bug in a backend must not take the engine down
                log.exception("job for %s crashed", job.request.model)
                job.fail(f"an error was encountered while running the model: {error}")
            finally:
                self._active = None
                self._jobs_done += 1
                self._record(job)
                self._residency_changed.set()

    def _record(self, job: Job) -> None:
        job.report.total_seconds = time.perf_counter() - job.submitted
        self.history.append(job.report)
        for observe in self.observers:
            try:
                observe(job.report)
            except Exception:  # an observer must never break scheduling
                log.exception("request observer failed")
        # The per-token gaps are for the observers; history keeps a thousand reports, not their tokens.
        job.report.token_gaps.clear()

    def _execute(self, job: Job) -> None:
        """Run one job to its end on the worker thread."""
        request = job.request
        job.report.started = True
        job.report.queue_seconds = time.perf_counter() - job.submitted
        if job.cancelled:
            job.report.outcome = "cancelled while queued"
            return
        if request.kind == "unload":
            self._unload(request.model)
            job.report.outcome = "done"
            job.emit(Finished(done_reason="unload"))
            return
        try:
            resident = self._ensure_loaded(request.model, request.path)
        except Exception as error:
            log.warning("loading %s failed: %s", request.model, error)
            job.report.outcome = "failed"
            status = 503 if isinstance(error, MemoryError) else 500
            job.emit(Failed(f"failed to load model '{request.model}': {error}", status))
            return
        resident.busy += 1
        resident.last_used = time.monotonic()
        try:
            if request.kind == "load":
                job.report.outcome = "done"
                job.emit(Finished(done_reason="load", load_duration=_since(job.submitted)))
            else:
                run_generation(job, resident.model)
        finally:
            resident.busy -= 1
            self._set_expiry(resident, request.keep_alive)

    # -- residency (worker thread) -----------------------------------------------------------

    def _ensure_loaded(self, name: str, path: Path) -> Resident:
        resident = self._resident.get(name)
        if resident is not None:
            return resident
        backend = self.backend_for(path)
        self._make_room()
        model = backend.load(path)
        self._loads += 1
        resident = Resident(name, path, model, model.info, math.inf)
        self._resident[name] = resident
        log.info("loaded %s with %s", name, backend.name)
        return resident

    def _make_room(self) -> None:
        """Unload the least recently used idle models until one more fits under ``max_loaded``."""
        idle = sorted((r for r in self._resident.values() if r.busy == 0), key=lambda r: r.last_used)
        while len(self._resident) >= self.max_loaded and idle:
            victim = idle.pop(0)
            log.info("unloading %s to make room (TRILLM_MAX_LOADED_MODELS=%d)", victim.name, self.max_loaded)
            self._unload(victim.name)

    def backend_for(self, path: Path) -> Backend:
        for backend in self._backends:
            if backend.can_load(path):
                return backend
        raise LookupError(f"no backend can serve {path}")

    def _set_expiry(self, resident: Resident, keep_alive: float | None) -> None:
        seconds = self.default_keep_alive if keep_alive is None else keep_alive
        if seconds == 0:
            self._unload(resident.name)
            return
        resident.expires_at = math.inf if seconds < 0 else time.monotonic() + seconds

    def _unload(self, name: str) -> None:
        resident = self._resident.pop(name, None)
        if resident is not None:
            resident.model.close()
            self._unloads += 1
            log.info("unloaded %s", name)

    def _unload_expired(self) -> None:
        now = time.monotonic()
        for resident in list(self._resident.values()):
            if resident.busy == 0 and resident.expires_at <= now:
                self._unload(resident.name)

    def _unload_all(self) -> None:
        for name in list(self._resident):
            self._unload(name)

    async def _expiry_loop(self) -> None:
        while True:
            self._residency_changed = trio.Event()
            deadline = min((r.expires_at for r in self._snapshot()), default=math.inf)
            with trio.move_on_after(max(0.0, deadline - time.monotonic())):
                await self._residency_changed.wait()
            if any(r.expires_at <= time.monotonic() for r in self._snapshot()):
                await self._worker.run(self._unload_expired)


def log_report(report: JobReport) -> None:
    """One structured line per request: model, tokens, durations and outcome."""
    ttft = "-" if report.first_token_seconds is None else f"{report.first_token_seconds * 1e3:.1f}ms"
    log.info(
        "request model=%s kind=%s outcome=%s done_reason=%s prompt_tokens=%d generated_tokens=%d "
        "queue=%.1fms ttft=%s total=%.1fms",
        report.model,
        report.kind,
        report.outcome.replace(" ", "_"),
        report.done_reason or "-",
        report.prompt_tokens,
        report.generated_tokens,
        report.queue_seconds * 1e3,
        ttft,
        report.total_seconds * 1e3,
    )


def _since(start: float) -> int:
    return int((time.perf_counter() - start) * 1e9)
