"""Over-long prompts through the engine (fake backend, no sockets): shortened by default, refused
when truncation is off, with ``prompt_eval_count`` saying what the model read."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio

from inference.backends.fake import FakeBackend
from inference.engine.job import Failed, Finished, GenerationRequest, Truncation
from inference.engine.scheduler import Engine
from inference.failures import FailureKind
from tests.conftest import write_fake
from tests.engine.test_engine import events

BACKEND = FakeBackend()


@pytest.fixture
async def engine() -> AsyncIterator[Engine]:
    engine = Engine([BACKEND], num_parallel=2)
    async with trio.open_nursery() as nursery:
        await nursery.start(engine.run)
        yield engine
        nursery.cancel_scope.cancel()


def history(turns: int) -> list[dict[str, object]]:
    messages: list[dict[str, object]] = [{"role": "system", "content": "SYSTEM"}]
    for i in range(turns):
        messages += [
            {"role": "user", "content": f"question {i} " + "q" * 40},
            {"role": "assistant", "content": f"answer {i} " + "a" * 40},
        ]
    return [*messages, {"role": "user", "content": "the latest question"}]


def chat_request(
    tmp_path: Path, messages: list[dict[str, object]], truncate: Truncation
) -> GenerationRequest:
    path = write_fake(tmp_path, "chat", pieces=["ok"])
    return GenerationRequest(
        model="chat:latest", path=path, messages=messages, num_ctx=300, num_predict=20, truncate=truncate
    )


async def test_a_long_chat_loses_its_oldest_turns_and_keeps_system_and_latest(
    engine: Engine, tmp_path: Path
) -> None:
    messages = history(10)  # about 1,000 characters: the fake's tokens
    got = await events(engine.submit_nowait(chat_request(tmp_path, messages, "turns")))
    finished = got[-1]
    assert isinstance(finished, Finished), got
    prompt = "".join(map(chr, BACKEND.prompts[-1]))
    assert prompt.startswith("<system>SYSTEM") and prompt.endswith("<user>the latest question<assistant>")
    assert "question 9" in prompt and "question 0" not in prompt  # newest earlier turns stay
    assert finished.prompt_eval_count == len(prompt) <= 300 - 20


async def test_truncation_off_is_a_typed_invalid_request(engine: Engine, tmp_path: Path) -> None:
    got = await events(engine.submit_nowait(chat_request(tmp_path, history(10), "off")))
    failed = got[-1]
    assert isinstance(failed, Failed) and failed.kind is FailureKind.INVALID_REQUEST
    assert "longer than the context length" in failed.message and "num_ctx 300" in failed.message


async def test_a_chat_whose_latest_turn_cannot_fit_says_so(engine: Engine, tmp_path: Path) -> None:
    messages = [*history(2)[:-1], {"role": "user", "content": "x" * 400}]
    got = await events(engine.submit_nowait(chat_request(tmp_path, messages, "turns")))
    failed = got[-1]
    assert isinstance(failed, Failed) and failed.kind is FailureKind.INVALID_REQUEST
    assert "only the system messages, tools and the latest turn" in failed.message


async def test_a_single_prompt_keeps_its_head_and_its_end(engine: Engine, tmp_path: Path) -> None:
    path = write_fake(tmp_path, "gen", pieces=["ok"])
    text = "HEAD" + "m" * 500 + "TAIL"
    request = GenerationRequest(
        model="gen:latest", path=path, prompt=text, num_ctx=100, truncate="tokens", num_keep=4
    )
    got = await events(engine.submit_nowait(request))
    assert isinstance(got[-1], Finished)
    prompt = "".join(map(chr, BACKEND.prompts[-1]))
    assert prompt.startswith("HEAD") and prompt.endswith("TAIL") and len(prompt) == 75
    assert got[-1].prompt_eval_count == 75
