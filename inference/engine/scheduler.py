"""The engine: admission, batch scheduling, model residency and cancellation.

One :class:`Engine` lives in the application's nursery (``await nursery.start(engine.run)``). It
admits requests into a bounded FIFO queue. On the dedicated worker thread, a loop moves queued
requests into their model's :class:`~inference.engine.batch.DecodeBatch` while it holds fewer than
``num_parallel`` sequences, then advances every batch one step; requests join and leave between
steps. An embedding model's requests take its turns instead, one batch of inputs each
(:mod:`inference.engine.embedding`). Models stay resident for their ``keep_alive`` and are unloaded when it runs out, or, when
``max_loaded`` models are in memory and another is needed, the idle one used least recently goes.
A request is linked to its generation only by its :class:`~inference.engine.job.Job`; closing the job is
what cancels the work, wherever it is: a queued job leaves the queue at once, a running one leaves
its batch before the next step.
"""

from __future__ import annotations

import itertools
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import trio

from inference.backends.base import Backend, LoadedModel, ModelInfo, ModelUnavailable, placement_of
from inference.engine import heap
from inference.engine.batch import Admission, DecodeBatch
from inference.engine.embedding import EmbedWork
from inference.engine.generation import Generation
from inference.engine.job import Failed, Finished, GenerationRequest, Job, JobReport
from inference.engine.worker import WorkerThread
from inference.failures import FailureKind

log = logging.getLogger("trillm.engine")

SHUTDOWN_MESSAGE = "the server is shutting down"
BUSY_MESSAGE = "server busy, please try again.  maximum pending requests exceeded"


class EngineBusy(Exception):
    """Raised by :meth:`Engine.submit_nowait` when the wait queue is full."""


@dataclass
class Resident:
    """A loaded model, its decode batch and when it may be unloaded (``math.inf`` = never)."""

    name: str
    path: Path
    model: LoadedModel
    info: ModelInfo
    expires_at: float
    last_used: float = 0.0
    batch: DecodeBatch | None = None
    sequences: dict[int, Generation] = field(default_factory=dict)
    embeddings: deque[EmbedWork] = field(default_factory=deque)  # embed jobs, first come first
    keep_alive: float | None = None  # the latest request's, applied when the batch empties

    @property
    def busy(self) -> int:
        return len(self.sequences) + len(self.embeddings)


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
        num_parallel: int = 4,
        default_num_ctx: int = 4096,
    ) -> None:
        self._backends = backends
        self.default_num_ctx = default_num_ctx
        self.max_queue = max_queue
        self.max_loaded = max(1, max_loaded)
        self.num_parallel = max(1, num_parallel)
        self.default_keep_alive = default_keep_alive
        # Appended on the Trio thread, taken by the worker thread: guarded by ``_lock``.
        self._pending: deque[Job] = deque()
        self._lock = threading.Lock()
        self._wakeup = trio.Event()
        self._residency_changed = trio.Event()
        self._running: set[Job] = set()
        self._resident: dict[str, Resident] = {}
        self._worker = WorkerThread()
        self.abandoned: list[WorkerThread] = []  # worker threads left stuck in native code
        self._beats = 0  # turns of the batch loop: a worker stuck in a step stops counting
        self._nursery: trio.Nursery | None = None
        self._keys = itertools.count()
        self._trio_token: trio.lowlevel.TrioToken | None = None
        self._jobs_done = 0
        self._loads = 0
        self._unloads = 0
        self.history: deque[JobReport] = deque(maxlen=1024)
        # Called on the Trio thread with each finished job's report (request logs, metrics).
        self.observers: list[Callable[[JobReport], None]] = [log_report]

    # -- lifecycle ---------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Serve until cancelled; ready (``started``) once the worker thread is running."""
        self._trio_token = trio.lowlevel.current_trio_token()
        heap.freeze()  # the imports are done: keep full collections short (engine/heap.py)
        self._worker.start()
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                nursery.start_soon(self._schedule_loop)
                nursery.start_soon(self._expiry_loop)
                task_status.started()
                try:
                    await trio.sleep_forever()
                finally:
                    # Before the nursery waits for the scheduler: stop the jobs on the thread.
                    self.abort_all()
        finally:
            with trio.CancelScope(shield=True):
                await self._worker.run(self._close_thread)
                self._worker.stop()
                # Wait for the thread to end: a thread still inside a backend's native code when
                # the interpreter exits makes the process abort (SIGABRT) instead of exiting 0.
                await trio.to_thread.run_sync(self._worker.join, 10.0)

    def abort_all(self, message: str = SHUTDOWN_MESSAGE) -> None:
        """End every queued and running job with an error event for its client."""
        with self._lock:
            jobs = [*self._pending, *self._running]
            self._pending.clear()
        for job in jobs:
            job.abort(message)

    async def drain(self, seconds: float) -> None:
        """Give running requests ``seconds`` to finish, then abort what is left."""
        await trio.sleep(seconds)
        if self._running or self._pending:
            log.warning("shutdown grace of %.1fs ran out: aborting unfinished requests", seconds)
        self.abort_all()

    def statistics(self) -> EngineStatistics:
        return EngineStatistics(
            queued=len(self._pending),
            active=len(self._running),
            loaded=len(self._resident),
            jobs_done=self._jobs_done,
            loads=self._loads,
            unloads=self._unloads,
        )

    async def unload(self, name: str) -> None:
        """Unload ``name`` if it is loaded; a model still generating goes when its batch empties."""
        await self._worker.run(self._unload_when_idle, name)
        self._residency_changed.set()

    def resident(self) -> list[Resident]:
        """Models in memory now, most recently expiring first."""
        return sorted(self._snapshot(), key=lambda r: -r.expires_at)

    def _snapshot(self) -> list[Resident]:
        # The worker thread loads and unloads; list() copies the values in one step under the GIL.
        return list(self._resident.values())

    # -- admission (Trio thread) -------------------------------------------------------------

    def submit_nowait(self, request: GenerationRequest) -> Job:
        """Queue ``request``; raises :class:`EngineBusy` when the queue is full."""
        job = Job(request, on_close=self._forget)
        with self._lock:
            if len(self._pending) >= self.max_queue:
                raise EngineBusy(BUSY_MESSAGE)
            self._pending.append(job)
        self._wakeup.set()
        return job

    def _forget(self, job: Job) -> None:
        with self._lock:
            try:
                self._pending.remove(job)
            except ValueError:
                return  # already running or finished: the batch loop sees the cancel flag
        job.report.outcome = "cancelled while queued"
        self._record(job)
        job.end_unheard()

    async def _schedule_loop(self) -> None:
        while True:
            if not self._pending:
                self._wakeup = trio.Event()
                await self._wakeup.wait()
                continue
            try:
                await self._worker.run(self._serve)
            except ModelUnavailable as error:  # the worker was stuck in a lost rank's collective
                await self._worker.run(self._recover, error)
            except Exception as error:  # a bug in the loop itself: fail what it held, keep the engine up
                log.exception("the batch loop crashed")
                await self._worker.run(self._fail_running, error)
            self._residency_changed.set()

    def _record(self, job: Job) -> None:
        """On the Trio thread: keep the report and tell the observers."""
        self._running.discard(job)  # here, so that "idle" means "every report is in"
        self._jobs_done += 1
        job.report.total_seconds = time.perf_counter() - job.submitted
        self.history.append(job.report)
        for observe in self.observers:
            try:
                observe(job.report)
            except Exception:  # an observer must never break scheduling
                log.exception("request observer failed")
        # The per-token gaps are for the observers; history keeps a thousand reports, not their tokens.
        job.report.token_gaps.clear()
        self._residency_changed.set()  # a model may have gone idle: its keep_alive runs now

    # -- the batch loop (worker thread) ------------------------------------------------------

    def _serve(self) -> None:
        """Admit and step until nothing runs and nothing waits (or this thread was given up)."""
        worker = self._worker
        while worker.current:
            self._beats += 1
            worker.run_waiting()
            self._admit()
            busy = [r for r in self._resident.values() if r.busy]
            if not busy:
                if not self._pending:
                    return
                continue
            for resident in busy:
                if not worker.current:
                    return
                self._step(resident)

    # -- a rank of a distributed group lost ---------------------------------------------------

    def rank_lost(self) -> None:
        """From any thread: a rank of a distributed group was lost. If the worker thread is
        stuck in a collective with it (MLX does not always fail one whose peer died), the engine
        goes on with a new worker thread after a short grace."""
        token, nursery = self._trio_token, self._nursery
        if token is None or nursery is None:
            return

        def watch() -> None:
            nursery.start_soon(self._watch_worker)

        try:
            token.run_sync_soon(watch)
        except trio.RunFinishedError:
            pass

    async def _watch_worker(self, grace: float = 2.0) -> None:
        worker, beats = self._worker, self._beats
        await trio.sleep(grace)
        if worker is not self._worker or not worker.busy or self._beats != beats:
            return  # it came back by itself (the collective failed and the batch said so)
        log.error("the worker thread is stuck in a collective with a lost rank: going on with a new one")
        self.abandoned.append(worker)
        self._worker = WorkerThread()
        self._worker.start()
        worker.abandon(ModelUnavailable("a rank of the distributed group was lost"))

    def _recover(self, error: ModelUnavailable) -> None:
        """On the new worker thread: end the sharded models' sequences, and the jobs the stuck
        thread held outside any batch (a load), with the lost rank's message."""
        held: set[Job] = set()
        for resident in list(self._resident.values()):
            held.update(g.job for g in resident.sequences.values())
            held.update(w.job for w in resident.embeddings)
            placement = placement_of(resident.model)
            if placement is not None and placement.get("lost"):
                self._lose_batch(resident, ModelUnavailable(str(placement["lost"])))
        for job in list(self._running - held):
            job.report.outcome = "failed"
            job.emit(Failed(str(error), FailureKind.UNAVAILABLE))
            self._finished(job)

    def _admit(self) -> None:
        """Move every queued job that fits now into its batch, in arrival order."""
        if not self._pending:
            return
        with self._lock:
            waiting = list(self._pending)
        for job in waiting:
            if not self._fits(job):
                continue
            with self._lock:
                try:
                    self._pending.remove(job)
                except ValueError:
                    continue  # cancelled meanwhile
            self._running.add(job)
            try:
                self._start(job)
            except ModelUnavailable as error:  # a rank of its distributed group was lost
                job.report.outcome = "failed"
                job.emit(Failed(str(error), FailureKind.UNAVAILABLE))
                self._finished(job)
            except Exception as error:  # a backend bug in prepare or add ends this job only
                log.exception("starting the job for %s failed", job.request.model)
                job.report.outcome = "failed"
                job.emit(Failed(f"an error was encountered while running the model: {error}"))
                self._finished(job)

    def _fits(self, job: Job) -> bool:
        request = job.request
        resident = self._resident.get(request.model)
        if request.kind != "generate":
            return True
        if resident is not None:
            if request.num_ctx is not None and resident.info.can_grow_to(request.num_ctx):
                return resident.busy == 0  # it loads again with the larger window once idle
            own = resident.model.max_sequences
            return resident.busy < (min(own, self.num_parallel) if own > 0 else self.num_parallel)
        return len(self._resident) < self.max_loaded or any(r.busy == 0 for r in self._resident.values())

    def _start(self, job: Job) -> None:
        request = job.request
        job.report.started = True
        job.report.queue_seconds = time.perf_counter() - job.submitted
        if job.cancelled:
            job.report.outcome = "cancelled while queued"
            return self._finished(job)
        if request.kind == "unload":
            self._unload_when_idle(request.model)
            job.report.outcome = "done"
            job.emit(Finished(done_reason="unload"))
            return self._finished(job)
        try:
            resident = self._ensure_loaded(request.model, request.path, request.num_ctx)
        except ModelUnavailable as error:
            job.report.outcome = "failed"
            job.emit(Failed(f"model '{request.model}' is unavailable: {error}", FailureKind.UNAVAILABLE))
            return self._finished(job)
        except Exception as error:
            log.warning("loading %s failed: %s", request.model, error)
            job.report.outcome = "failed"
            kind = FailureKind.OUT_OF_MEMORY if isinstance(error, MemoryError) else FailureKind.INTERNAL
            job.emit(Failed(f"failed to load model '{request.model}': {error}", kind))
            return self._finished(job)
        resident.last_used = time.monotonic()
        resident.keep_alive = request.keep_alive
        if request.kind == "load":
            job.report.outcome = "done"
            self._settle(resident)  # before the reply, so that /api/ps after it shows the new expiry
            job.emit(Finished(done_reason="load", load_duration=_since(job.submitted)))
            return self._finished(job)
        if (request.kind == "embed") != resident.info.embedding:
            work_kind = "embeddings" if request.kind == "embed" else "text generation"
            job.report.outcome = "failed"
            job.emit(Failed(f'"{request.model}" does not support {work_kind}', FailureKind.INVALID_REQUEST))
            self._finished(job)
            return self._settle(resident)
        if request.kind == "embed":
            work = EmbedWork(job, resident.model)
            if work.prepare():
                resident.embeddings.append(work)
                return None
            self._finished(job)
            return self._settle(resident)
        num_ctx = self.default_num_ctx if request.num_ctx is None else request.num_ctx
        generation = Generation(job, resident.model, num_ctx)
        try:
            prepared = generation.prepare()
        except Exception as error:  # a template or tokenizer error ends this request only
            prepared = generation.fail(error)
        if not prepared:
            self._finished(job)
            return self._settle(resident)
        if resident.batch is None:
            resident.batch = resident.model.open_batch()
        key = next(self._keys)
        cached = resident.batch.add(
            Admission(
                key,
                generation.prompt,
                request.params,
                job.should_stop,
                generation.constraint,
                generation.media,
            )
        )
        resident.sequences[key] = generation  # only once the batch holds it
        job.report.cached_tokens = cached
        job.report.batch_size = resident.busy

    def _step(self, resident: Resident) -> None:
        """One step of ``resident``'s batch (hand each sequence its token), or one batch of its
        first embedding request."""
        if resident.embeddings:
            work = resident.embeddings[0]
            shared = any(r.sequences for r in self._resident.values() if r is not resident)
            if not work.step(shared):
                resident.embeddings.popleft()
                self._finished(work.job)
                self._settle(resident)
            return
        batch = resident.batch
        assert batch is not None
        for key, generation in list(resident.sequences.items()):
            if generation.job.cancelled:  # left before this step: no work spent on it
                generation.cancel()
                self._retire(resident, key)
        if not resident.sequences:
            return
        try:
            results = batch.step()
        except ModelUnavailable as error:  # a rank of its distributed group was lost
            self._lose_batch(resident, error)
            return
        except Exception as error:  # the shared step failed: every sequence in it is lost
            log.exception("a decode step of %s failed", resident.name)
            self._lose_batch(resident, error)
            return
        for key, result in results:
            member = resident.sequences.get(key)
            if member is None:
                continue
            if result is None:
                going = member.end()
            elif isinstance(result, BaseException):
                going = member.fail(result)
            else:
                going = member.feed(result)
            if not going:
                self._retire(resident, key)

    def _retire(self, resident: Resident, key: int) -> None:
        generation = resident.sequences.pop(key)
        if resident.batch is not None:
            resident.batch.remove(key)
        self._finished(generation.job)
        if not resident.sequences:
            self._settle(resident)

    def _finished(self, job: Job) -> None:
        """A job is over: hand its report to the Trio thread."""
        if job.cancelled_at is not None:
            job.report.stop_seconds = time.perf_counter() - job.cancelled_at
        if self._trio_token is not None:
            try:
                self._trio_token.run_sync_soon(self._record, job)
            except trio.RunFinishedError:
                pass

    def _lose_batch(self, resident: Resident, error: Exception) -> None:
        """Fail every sequence of ``resident``'s batch; the next requests get a fresh batch (this
        one is not touched again)."""
        resident.batch = None
        for key, generation in list(resident.sequences.items()):
            generation.fail(error)
            self._retire(resident, key)

    def _fail_running(self, error: Exception) -> None:
        for resident in list(self._resident.values()):
            self._lose_batch(resident, error)
            while resident.embeddings:
                work = resident.embeddings.popleft()
                work.job.emit(Failed(f"an error was encountered while running the model: {error}"))
                self._finished(work.job)

    # -- residency (worker thread) -----------------------------------------------------------

    def _ensure_loaded(self, name: str, path: Path, num_ctx: int | None = None) -> Resident:
        """``name``'s resident model, loaded if it is not; loaded again when idle and a request
        asks for a larger window than its context holds (and its training allows)."""
        resident = self._resident.get(name)
        if resident is not None and num_ctx is not None and resident.info.can_grow_to(num_ctx):
            if resident.busy == 0:
                log.info("loading %s again for num_ctx %d", name, num_ctx)
                self._unload(name)
                resident = None
        if resident is not None:
            return resident
        backend = self.backend_for(path)
        self._make_room()
        # A smaller window than the default is the request's own business (its generation keeps to
        # it): the model loads with the default, so later requests are not held to it.
        larger = num_ctx if num_ctx is not None and num_ctx > self.default_num_ctx else None
        model = backend.load(path, larger)
        heap.freeze()
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

    def _settle(self, resident: Resident) -> None:
        """An idle model's keep_alive starts now (the latest request's)."""
        if resident.busy:
            return
        seconds = self.default_keep_alive if resident.keep_alive is None else resident.keep_alive
        if seconds == 0:
            self._unload(resident.name)
            return
        resident.expires_at = math.inf if seconds < 0 else time.monotonic() + seconds

    def _unload_when_idle(self, name: str) -> None:
        resident = self._resident.get(name)
        if resident is None:
            return
        resident.keep_alive = 0
        self._settle(resident)

    def _unload(self, name: str, *, closing: bool = False) -> None:
        resident = self._resident.pop(name, None)
        if resident is not None:
            if resident.batch is not None:
                resident.batch.close()
            resident.model.close()
            heap.thaw()
            if self._resident and not closing:  # others stay loaded: free this one's cycles now
                heap.settle()
            self._unloads += 1
            log.info("unloaded %s", name)

    def _unload_expired(self) -> None:
        now = time.monotonic()
        for resident in list(self._resident.values()):
            if resident.busy == 0 and resident.expires_at <= now:
                self._unload(resident.name)

    def _close_thread(self) -> None:
        """The worker thread's last call: unload every model, then free per-thread state."""
        for name in list(self._resident):
            self._unload(name, closing=True)
        for backend in self._backends:
            try:
                backend.release_thread()
            except Exception:
                log.exception("%s could not release the worker thread", backend.name)

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
