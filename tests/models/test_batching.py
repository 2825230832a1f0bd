"""Continuous batching and the prefix cache on real models: what a batch must never change.

The tests marked ``both_backends`` run on MLX and on llama.cpp (the same models as GGUF).

A request's output is the same alone or in a batch (greedy, and seeded sampling too); requests join
a running batch, finish at different lengths or disconnect without disturbing the others; a chat's
next turn starts from the cached KV of the previous one, and the cache keeps within its bounds.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import trio

from app.config import Settings
from inference.backends.base import Step
from tests.conftest import Server, running_server, wait_until

pytestmark = pytest.mark.mlx

PROMPTS = [
    "Say hello",
    "What is the capital of France and why is it famous?",
    "one two",
    "Tell me a long story about a small robot that learns to paint the sea at night",
]
LENGTHS = [12, 20, 8, 16]


def body(prompt: str, num_predict: int, **options: Any) -> dict[str, Any]:
    return {
        "model": "random",
        "stream": False,
        "messages": [{"role": "user", "content": prompt}],
        "options": {"temperature": 0, "num_predict": num_predict} | options,
    }


async def ask(server: Server, request: dict[str, Any]) -> dict[str, Any]:
    async with server.client() as client:
        r = await client.post("/api/chat", json=request)
    assert r.status_code == 200, r.text
    reply: dict[str, Any] = r.json()
    return reply


async def alone(server: Server, requests: list[dict[str, Any]]) -> list[str]:
    return [(await ask(server, r))["message"]["content"] for r in requests]


async def together(server: Server, requests: list[dict[str, Any]]) -> list[str]:
    out: list[str] = [""] * len(requests)

    async def one(i: int) -> None:
        out[i] = (await ask(server, requests[i]))["message"]["content"]

    async with trio.open_nursery() as nursery:
        for i in range(len(requests)):
            nursery.start_soon(one, i)
    return out


@pytest.fixture
def batched(settings: Settings) -> Settings:
    settings.num_parallel = 4
    settings.prefix_cache_entries = 0  # every request computes its whole prompt
    return settings


@pytest.mark.both_backends
async def test_concurrent_greedy_requests_match_each_alone(batched: Settings) -> None:
    requests = [body(p, n) for p, n in zip(PROMPTS, LENGTHS, strict=True)]
    requests[1]["options"]["repeat_penalty"] = 1.3  # a processor that reads the whole history
    requests[3]["options"]["frequency_penalty"] = 0.5
    async with running_server(batched) as server:
        single = await alone(server, requests)
        engine = server.services.engine
        # (A report reaches the history just after its reply: wait for all of them.)
        await wait_until(lambda: len(engine.history) >= len(requests))
        before = len(engine.history)
        batch = await together(server, requests)
        await wait_until(lambda: len(engine.history) - before >= len(requests))
        reports = list(engine.history)[before:]
    assert batch == single
    assert max(r.batch_size for r in reports) >= 2, "the requests did share a batch"
    assert sorted(r.generated_tokens for r in reports) == sorted(LENGTHS)


@pytest.mark.both_backends
async def test_seeded_sampling_is_the_same_alone_and_in_a_batch(batched: Settings) -> None:
    seeded = body(PROMPTS[1], 16, temperature=0.9, seed=7)
    others = [body(p, 16, temperature=0.9) for p in PROMPTS[2:]]
    async with running_server(batched) as server:
        (single,) = await alone(server, [seeded])
        mixed = await together(server, [seeded, *others])
    assert mixed[0] == single


async def stream_lines(
    server: Server, request: dict[str, Any], lines: list[dict[str, Any]], stop_after: int = 0
) -> None:
    """Stream ``request`` into ``lines``; disconnect after ``stop_after`` lines when set."""
    async with (
        server.client() as client,
        client.stream("POST", "/api/chat", json=request | {"stream": True}) as r,
    ):
        async for line in r.aiter_lines():
            if line:
                lines.append(json.loads(line))
            if stop_after and len(lines) >= stop_after:
                return


def text(lines: list[dict[str, Any]]) -> str:
    return "".join(line.get("message", {}).get("content", "") for line in lines)


@pytest.mark.both_backends
async def test_requests_join_a_running_batch_and_a_disconnect_disturbs_no_one(batched: Settings) -> None:
    # The first runs long enough that the others join it even when a loaded CI machine is slow to
    # open their connections (at 40 tokens it once finished first).
    first, joiner, leaver = body(PROMPTS[3], 240), body(PROMPTS[1], 12), body(PROMPTS[0], 200)
    async with running_server(batched) as server:
        expected_first, expected_joiner = await alone(server, [first, joiner])
        engine = server.services.engine
        await wait_until(lambda: len(engine.history) >= 2)
        before = len(engine.history)
        streams: list[list[dict[str, Any]]] = [[], [], []]
        async with trio.open_nursery() as nursery:
            nursery.start_soon(stream_lines, server, first, streams[0])
            await wait_until(lambda: len(streams[0]) >= 5, 30)  # the batch is running: join it
            nursery.start_soon(stream_lines, server, joiner, streams[1])
            nursery.start_soon(stream_lines, server, leaver, streams[2], 3)
        await wait_until(lambda: engine.statistics().active == 0, 30)
        reports = list(engine.history)[before:]
    assert text(streams[0]) == expected_first
    assert text(streams[1]) == expected_joiner
    assert streams[0][-1]["done"] and streams[1][-1]["done"]
    left = [r for r in reports if r.outcome == "cancelled"]
    assert len(left) == 1 and left[0].steps_after_cancel <= 1 and left[0].generated_tokens < 200
    assert max(r.batch_size for r in reports) >= 2


async def test_a_lone_sequence_moves_into_the_batch_and_out_again_unchanged(batched: Settings) -> None:
    """A lone sequence decodes outside mlx-lm's batch generator (faster); a request joining moves
    it in, and that request leaving moves it out again: its seeded sampling comes through both
    moves, the text is what the request gives alone."""
    seeded = body(PROMPTS[3], 400, temperature=0.9, seed=11)
    joiner = body(PROMPTS[1], 6)
    async with running_server(batched) as server:
        engine = server.services.engine
        (expected,) = await alone(server, [seeded])
        await wait_until(lambda: len(engine.history) >= 1)
        before = len(engine.history)
        lines: list[dict[str, Any]] = []
        async with trio.open_nursery() as nursery:
            nursery.start_soon(stream_lines, server, seeded, lines)
            await wait_until(lambda: len(lines) >= 5, 30)
            assert (await ask(server, joiner))["done"]
        await wait_until(lambda: len(engine.history) - before == 2)
        reports = list(engine.history)[before:]
    assert text(lines) == expected and lines[-1]["done"]
    assert sorted((r.batch_size, r.generated_tokens) for r in reports) == [(1, 400), (2, 6)]


@pytest.mark.parametrize("moves", [(), (3,), (3, 9), (0, 4), (1, 2, 5, 8)])
def test_moves_between_running_alone_and_in_the_batch_change_no_token(
    json_random_dir: Path, moves: tuple[int, ...]
) -> None:
    """On the batch itself, step by step: a seeded, grammar-constrained sequence gives the same
    tokens however often a second sequence joins (moving it into the batch generator) and leaves
    (moving it out), including before its first token."""
    from inference.backends.base import SamplingParams
    from inference.backends.mlx.backend import MlxBackend
    from inference.engine.batch import Admission
    from tests.models.test_structured import SCHEMAS
    from validation.structured import prepare_format

    model = MlxBackend().load(json_random_dir)
    grammar = prepare_format(SCHEMAS["nested objects"]).grammar
    prompt = model.tokenize("Order:")
    params = SamplingParams(temperature=1.0, seed=5)

    def run(moves: tuple[int, ...]) -> list[int]:
        batch = model.open_batch()
        batch.add(Admission(1, prompt, params, lambda: False, model.constraint(grammar)))
        tokens: list[int] = []
        steps = 0
        partner = False
        while True:
            if steps in moves:
                if partner:
                    batch.remove(2)
                else:
                    batch.add(
                        Admission(2, model.tokenize("x y"), SamplingParams(temperature=0), lambda: False)
                    )
                partner = not partner
            steps += 1
            for key, result in batch.step():
                assert isinstance(result, Step)
                if key == 1:
                    tokens.append(result.token)
                    if result.eos or len(tokens) == 80:
                        batch.close()
                        return tokens

    try:
        alone_tokens = run(())
        assert run(moves) == alone_tokens
    finally:
        model.close()


@pytest.mark.parametrize(("streams", "newcomers", "in_full"), [(1, 3, True), (2, 1, False)])
def test_prompts_go_in_full_when_newcomers_outnumber_the_streams(
    random_dir: Path, streams: int, newcomers: int, in_full: bool
) -> None:
    """A burst of new clients beside one stream reads its prompts in one go (the stream pauses
    once); a prompt beside as many streams as newcomers or more is read in small chunks."""
    from inference.backends.base import SamplingParams
    from inference.backends.mlx.backend import MlxBackend
    from inference.engine.batch import Admission

    model = MlxBackend().load(random_dir)
    greedy = SamplingParams(temperature=0)
    long_prompt = model.tokenize(" ".join(f"word{i}" for i in range(100)))
    # A dozen interleaved chunks (32 tokens until measured), at most two full ones (512).
    assert 12 * 32 < len(long_prompt) <= 2 * 512
    batch = model.open_batch()
    try:
        for key in range(streams):
            batch.add(Admission(key, model.tokenize(PROMPTS[key]), greedy, lambda: False))
        started: set[int] = set()
        while len(started) < streams:
            started |= {key for key, _ in batch.step()}
        newcomers_keys = set(range(100, 100 + newcomers))
        for key in newcomers_keys:
            batch.add(Admission(key, long_prompt, greedy, lambda: False))
        steps = 0
        while not newcomers_keys <= started:
            steps += 1
            started |= {key for key, _ in batch.step()}
        # In full: a step for the lone stream to join the batch generator, two to read the
        # prompts, and a few to start decoding them; in chunks: a step per chunk.
        assert (steps <= 8) == in_full, f"the newcomers' first tokens took {steps} steps"
    finally:
        batch.close()
        model.close()


@pytest.mark.both_backends
async def test_streams_keep_flowing_while_another_client_prefills_a_long_prompt(batched: Settings) -> None:
    """Prefill is interleaved with decoding: tokens reach the streaming client during it."""
    long_prompt = " ".join(f"word{i}" for i in range(700))
    async with running_server(batched) as server:
        streamed: list[dict[str, Any]] = []
        long_reply: list[dict[str, Any]] = []
        async with trio.open_nursery() as nursery:
            nursery.start_soon(stream_lines, server, body(PROMPTS[0], 400), streamed)
            await wait_until(lambda: len(streamed) >= 3, 30)
            at_submit = len(streamed)
            nursery.start_soon(stream_lines, server, body(long_prompt, 1, num_ctx=8192), long_reply)
            await wait_until(lambda: bool(long_reply), 60)
            during = len(streamed) - at_submit
            nursery.cancel_scope.cancel()
    assert during >= 3, f"only {during} tokens streamed while the long prompt was read"


@pytest.mark.both_backends
async def test_next_chat_turn_reuses_the_cached_prefix(settings: Settings) -> None:
    settings.num_parallel = 4
    settings.metrics = True
    turn1 = [{"role": "user", "content": PROMPTS[1]}]
    async with running_server(settings) as server:
        first = await ask(server, body(PROMPTS[1], 10))
        turn2 = [*turn1, first["message"], {"role": "user", "content": "And Germany?"}]
        second = await ask(server, body("", 10) | {"messages": turn2})
        async with server.client() as client:
            metrics = (await client.get("/metrics")).text
    hits = (
        f'trillm:prefix_cache_hits_total{{model_name="random:latest"}} {second["prompt_eval_cached_count"]}.0'
    )
    assert hits in metrics
    assert "prompt_eval_cached_count" not in first
    assert second["prompt_eval_cached_count"] >= first["prompt_eval_count"] - 1
    assert second["prompt_eval_count"] > second["prompt_eval_cached_count"]
    # The same answer as a server that computes the whole prompt.
    settings.prefix_cache_entries = 0
    async with running_server(settings) as server:
        cold = await ask(server, body("", 10) | {"messages": turn2})
    assert "prompt_eval_cached_count" not in cold
    assert cold["message"]["content"] == second["message"]["content"]


async def test_prefix_cache_evicts_the_least_recently_used(settings: Settings) -> None:
    settings.prefix_cache_entries = 1
    a, b = body(PROMPTS[1], 6), body(PROMPTS[3], 6)
    follow = {"role": "user", "content": "More"}

    def next_turn(request: dict[str, Any], reply: dict[str, Any]) -> dict[str, Any]:
        return request | {"messages": [*request["messages"], reply["message"], follow]}

    async with running_server(settings) as server:
        reply_a = await ask(server, a)
        reply_b = await ask(server, b)  # takes the only place in the cache
        hit = await ask(server, next_turn(b, reply_b))
        miss = await ask(server, next_turn(a, reply_a))
    assert hit["prompt_eval_cached_count"] >= reply_b["prompt_eval_count"]
    # Only the chat template's opening, shared with b's conversation, is found for a.
    assert miss.get("prompt_eval_cached_count", 0) < reply_a["prompt_eval_count"] // 2


def test_prefix_cache_stays_within_its_byte_bound() -> None:
    import mlx.core as mx
    from mlx_lm.models.cache import KVCache

    from inference.backends.mlx.batch import PrefixCache

    def cache(tokens: int) -> list[Any]:
        layer = KVCache()
        layer.update_and_fetch(mx.zeros((1, 2, tokens, 8)), mx.zeros((1, 2, tokens, 8)))
        return [layer]

    one = sum(c.nbytes for c in cache(10))
    bounded = PrefixCache(entries=100, max_bytes=3 * one)
    for start in range(6):
        bounded.store([start, *range(100, 109)], cache(10))
        assert bounded.nbytes <= 3 * one
    assert len(bounded) == 3
    found, covered = bounded.fetch([5, *range(100, 109), 7])
    assert found is not None and covered == 10
    assert bounded.fetch([0, *range(100, 109), 7]) == (None, 0), "the oldest entries were evicted"


async def test_queue_beyond_the_batch_is_fifo(batched: Settings) -> None:
    """With a batch of 2, the third and fourth requests wait and then start in arrival order."""
    batched.num_parallel = 2
    async with running_server(batched) as server:
        engine = server.services.engine
        order: list[int] = []

        async def one(i: int) -> None:
            request = body("go", 30 if i < 2 else 5) | {"model": "slow"}  # 20 ms a token
            await ask(server, request)
            order.append(i)

        async with trio.open_nursery() as nursery:
            for i in range(4):
                nursery.start_soon(one, i)
                await wait_until(lambda i=i: engine.statistics().active + engine.statistics().queued > i, 10)
            assert engine.statistics().queued == 2
        reports = [r for r in engine.history if r.model == "slow:latest"]
    assert max(r.batch_size for r in reports) == 2
    first_two = [r.queue_seconds for r in reports if r.generated_tokens == 30]
    last_two = [r.queue_seconds for r in reports if r.generated_tokens == 5]
    assert min(last_two) > max(first_two) + 0.3, "the later requests waited for a place in the batch"
    # Both later requests waited for a place (above); which of the first two ends first, or whether
    # a short later one overtakes a long first one, is timing, not order of service.
    assert sorted(order) == [0, 1, 2, 3]


@pytest.mark.both_backends
async def test_each_sequence_keeps_its_own_grammar_inside_a_batch(batched: Settings) -> None:
    """Different schemas (and none) decoding in one batch: each reply follows its own."""
    from tests.models.test_structured import SCHEMAS

    names = ["nested objects", "array bounds", "enum"]
    requests = [
        {
            "model": "jsonrandom",
            "prompt": "Order:",
            "stream": False,
            "format": SCHEMAS[name],
            "options": {"temperature": 1, "seed": i, "num_predict": 200},
        }
        for i, name in enumerate(names)
    ]
    plain = {"model": "jsonrandom", "prompt": "x", "stream": False, "options": {"num_predict": 30}}
    async with running_server(batched) as server:
        engine = server.services.engine
        before = len(engine.history)
        replies: dict[int, dict[str, Any]] = {}

        async def one(i: int, request: dict[str, Any]) -> None:
            async with server.client() as client:
                replies[i] = (await client.post("/api/generate", json=request)).json()

        async with trio.open_nursery() as nursery:
            for i, request in enumerate([*requests, plain]):
                nursery.start_soon(one, i, request)
        reports = list(engine.history)[before:]
    assert max(r.batch_size for r in reports) >= 2
    for i, name in enumerate(names):
        jsonschema.validate(json.loads(replies[i]["response"]), SCHEMAS[name])
    assert replies[len(names)]["done"]
