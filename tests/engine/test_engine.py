"""The engine on the fake backend, driven directly: no sockets, no HTTP, no real model.

These pin the engine's own promises (events in order, cancellation wherever a job is, a bounded
queue, failures typed by kind), so a scheduling bug shows up here before any HTTP test.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio

from inference.backends.fake import FakeBackend
from inference.engine.job import Event, Failed, Finished, GenerationRequest, Job, TextChunk
from inference.engine.scheduler import Engine, EngineBusy
from inference.failures import FailureKind
from tests.conftest import wait_until, write_fake


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[Engine]:
    engine = Engine([FakeBackend()], max_queue=2, num_parallel=1)
    async with trio.open_nursery() as nursery:
        await nursery.start(engine.run)
        yield engine
        nursery.cancel_scope.cancel()


def request(tmp_path: Path, name: str, **script: object) -> GenerationRequest:
    path = write_fake(tmp_path, name, **script)
    return GenerationRequest(model=f"{name}:latest", path=path, messages=[{"role": "user", "content": "hi"}])


async def events(job: Job) -> list[Event]:
    out: list[Event] = []
    with trio.fail_after(10):
        while not out or not isinstance(out[-1], Finished | Failed):
            out.append(await job.receive())
    return out


async def test_a_job_streams_its_pieces_then_finishes(engine: Engine, tmp_path: Path) -> None:
    job = engine.submit_nowait(request(tmp_path, "hello", pieces=["Hel", "lo", "!"]))
    got = await events(job)
    assert "".join(e.text for e in got if isinstance(e, TextChunk)) == "Hello!"
    finished = got[-1]
    assert isinstance(finished, Finished) and finished.done_reason == "stop"
    assert finished.eval_count == 4 and finished.prompt_eval_count > 0  # three pieces, then the end


async def test_closing_a_running_job_stops_it_within_a_step(engine: Engine, tmp_path: Path) -> None:
    job = engine.submit_nowait(request(tmp_path, "endless", pieces=["tick "], loop=True, delay=0.01))
    for _ in range(3):
        await job.receive()
    job.close()
    await wait_until(lambda: any(r.outcome == "cancelled" for r in engine.history))
    report = engine.history[-1]
    assert report.steps_after_cancel <= 1


async def test_a_queued_job_leaves_the_queue_at_once_and_a_full_queue_refuses(
    engine: Engine, tmp_path: Path
) -> None:
    running = engine.submit_nowait(request(tmp_path, "busy", pieces=["x"], loop=True, delay=0.01))
    await running.receive()  # it holds the only slot
    queued = [engine.submit_nowait(request(tmp_path, f"wait{i}", pieces=["y"])) for i in range(2)]
    with pytest.raises(EngineBusy):
        engine.submit_nowait(request(tmp_path, "third", pieces=["z"]))
    queued[0].close()
    assert engine.statistics().queued == 1
    assert engine.history[-1].outcome == "cancelled while queued"
    running.close()
    got = await events(queued[1])
    assert isinstance(got[-1], Finished)


@pytest.mark.parametrize(
    ("script", "kind"),
    [
        ({"load_error": "weights are corrupt"}, FailureKind.INTERNAL),
        ({"load_error": "cannot allocate 9 GB", "fail_with": "memory"}, FailureKind.OUT_OF_MEMORY),
        (
            {"pieces": ["a", "b", "c"], "loop": True, "fail_at": 2, "fail_with": "memory"},
            FailureKind.OUT_OF_MEMORY,
        ),
        ({"pieces": ["a", "b", "c"], "loop": True, "fail_at": 2}, FailureKind.INTERNAL),
    ],
)
async def test_failures_carry_a_kind_not_a_status(
    engine: Engine, tmp_path: Path, script: dict[str, object], kind: FailureKind
) -> None:
    got = await events(engine.submit_nowait(request(tmp_path, "faulty", **script)))
    assert isinstance(got[-1], Failed) and got[-1].kind is kind and got[-1].message


async def test_a_prompt_over_the_window_is_an_invalid_request(engine: Engine, tmp_path: Path) -> None:
    base = request(tmp_path, "small", pieces=["x"], context_length=8)
    got = await events(engine.submit_nowait(base))
    assert isinstance(got[-1], Failed) and got[-1].kind is FailureKind.INVALID_REQUEST
    assert "context" in got[-1].message
