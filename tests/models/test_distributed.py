"""A model served across two ranks (``trillm serve --distributed 2``: MLX's ring backend on
loopback) answers exactly as one process does, stops on every rank when its client leaves, and
turns a lost rank into an error line and 503s instead of a hang.

Each server runs in a process of its own (MLX's distributed group is global to a process); the
reference is a plain ``trillm serve`` on the same store. Every comparison is under greedy
decoding or a seed, so any difference in the shards' arithmetic or in the steps the ranks take
shows as different text.
"""

from __future__ import annotations

import json
import os
import re
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import ollama
import pytest
import trio

from tests.models.test_structured import Order
from tests.support.server_process import ServerProcess
from tests.support.tiny_model import ASK_PARIS, ASK_SKY, PARIS_CALL, SCRIPT

pytestmark = pytest.mark.mlx
GREEDY = {"temperature": 0}


def get_weather(city: str) -> str:
    """Get the current weather for a city.

    Args:
      city: The name of the city
    """
    return "22 degrees and sunny"


@pytest.fixture(scope="module")
def group_store(
    tmp_path_factory: pytest.TempPathFactory,
    tiny_dir: Path,
    random_dir: Path,
    agent_dir: Path,
    json_random_dir: Path,
    embedding_dirs: dict[str, Path],
) -> Path:
    root = tmp_path_factory.mktemp("group-store")
    for name, source in (
        ("tiny", tiny_dir),
        ("random", random_dir),
        ("agent", agent_dir),
        ("jsonrandom", json_random_dir),
        ("minilm", embedding_dirs["minilm"]),
    ):
        (root / name).symlink_to(source)
    return root


METRICS = {"TRILLM_METRICS": "1", "TRILLM_BACKEND": "mlx"}


@pytest.fixture(scope="module")
def pair(
    group_store: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, str, ServerProcess]]:
    """A two-rank server and a one-process server on the same store: (group url, single url, group)."""
    logs = tmp_path_factory.mktemp("group-logs")
    group = ServerProcess.start(group_store, logs / "group.log", "--distributed", "2", env=METRICS)
    try:
        single = ServerProcess.start(group_store, logs / "single.log", env=METRICS)
    except BaseException:
        group.stop()
        raise
    yield group.url, single.url, group
    assert single.stop() == 0
    assert group.stop() == 0, "rank 0 stops the group and exits cleanly"
    assert "rank 1: rank 0 stopped the group" in group.output()


async def both(pair: tuple[str, str, ServerProcess], **request: Any) -> tuple[Any, Any]:
    replies = []
    for url in pair[:2]:
        replies.append(await ollama.AsyncClient(host=url, timeout=120).chat(**request))
    return replies[0], replies[1]


async def both_streamed(pair: tuple[str, str, ServerProcess], **request: Any) -> tuple[list[Any], list[Any]]:
    replies = []
    for url in pair[:2]:
        parts = await ollama.AsyncClient(host=url, timeout=120).chat(**request, stream=True)
        replies.append([part async for part in parts])
    return replies[0], replies[1]


def text_of(parts: list[Any]) -> str:
    return "".join(part.message.content or "" for part in parts)


async def test_greedy_chat_equals_one_process_streaming_and_not(pair: tuple[str, str, ServerProcess]) -> None:
    prompt, reply = SCRIPT[0]
    messages = [{"role": "user", "content": prompt}]
    group, single = await both(pair, model="tiny", messages=messages, options=GREEDY)
    assert group.message.content == single.message.content == reply
    assert group.eval_count == single.eval_count and group.prompt_eval_count == single.prompt_eval_count
    ramble = [{"role": "user", "content": "Tell me about the lazy dog."}]
    options = {**GREEDY, "num_predict": 48}
    streamed_group, streamed_single = await both_streamed(
        pair, model="random", messages=ramble, options=options
    )
    assert text_of(streamed_group) == text_of(streamed_single)
    assert streamed_group[-1].eval_count == 48 and streamed_group[-1].done_reason == "length"
    whole, _ = await both(pair, model="random", messages=ramble, options=options)
    assert whole.message.content == text_of(streamed_group), "streaming or not, the same tokens"


async def test_seeded_sampling_and_penalties_equal_one_process(pair: tuple[str, str, ServerProcess]) -> None:
    messages = [{"role": "user", "content": "One two three"}]
    options = {"temperature": 0.9, "seed": 7, "top_k": 20, "repeat_penalty": 1.3, "num_predict": 40}
    group, single = await both(pair, model="random", messages=messages, options=options)
    assert group.message.content == single.message.content
    other, _ = await both(pair, model="random", messages=messages, options={**options, "seed": 8})
    assert other.message.content != group.message.content, "the seed is what fixes the draw"


async def test_tool_calls_thinking_and_schemas_equal_one_process(
    pair: tuple[str, str, ServerProcess],
) -> None:
    group, single = await both(pair, model="agent", messages=[ASK_PARIS], tools=[get_weather], options=GREEDY)
    calls = [(c.function.name, dict(c.function.arguments)) for c in group.message.tool_calls or []]
    assert calls == [(PARIS_CALL["function"]["name"], PARIS_CALL["function"]["arguments"])]
    assert group.message.model_dump() == single.message.model_dump()
    streamed, _ = await both_streamed(
        pair, model="agent", messages=[ASK_PARIS], tools=[get_weather], options=GREEDY
    )
    assert [p.message.tool_calls for p in streamed if p.message.tool_calls] == [group.message.tool_calls]
    thought, single_thought = await both(pair, model="agent", messages=[ASK_SKY], think=True, options=GREEDY)
    assert thought.message.thinking and thought.message.content
    assert (thought.message.thinking, thought.message.content) == (
        single_thought.message.thinking,
        single_thought.message.content,
    )
    ask = [{"role": "user", "content": "An order, please."}]
    schema = Order.model_json_schema()
    ordered, single_order = await both(
        pair, model="jsonrandom", messages=ask, format=schema, options={**GREEDY, "num_predict": 300}
    )
    Order.model_validate_json(ordered.message.content)
    assert ordered.message.content == single_order.message.content


async def test_concurrent_streams_batch_and_each_equals_its_reply_alone(
    pair: tuple[str, str, ServerProcess],
) -> None:
    prompts = ["The quick brown fox", "Hello there", "Bonjour", "One two three four"]
    options = {**GREEDY, "num_predict": 40}
    alone = []
    for prompt in prompts:
        reply = await ollama.AsyncClient(host=pair[1]).chat(
            model="random", messages=[{"role": "user", "content": prompt}], options=options
        )
        alone.append(reply.message.content)
    together: dict[int, str] = {}

    async def ask(index: int) -> None:
        reply = await ollama.AsyncClient(host=pair[0], timeout=120).chat(
            model="random", messages=[{"role": "user", "content": prompts[index]}], options=options
        )
        together[index] = reply.message.content or ""

    async with trio.open_nursery() as nursery:
        for index in range(len(prompts)):
            nursery.start_soon(ask, index)
    assert [together[i] for i in range(len(prompts))] == alone
    batches = re.findall(r"rank 1: sequence \d+ left after \d+ steps \(batch of (\d)\)", pair[2].output())
    assert max(int(size) for size in batches) >= 2, "rank 1 decoded the streams in one batch, as rank 0 did"


async def test_prefix_cache_ps_and_per_rank_metrics(pair: tuple[str, str, ServerProcess]) -> None:
    url = pair[0]
    turn = [{"role": "system", "content": "You are terse. " * 40}, {"role": "user", "content": "a"}]
    client = ollama.AsyncClient(host=url)
    first = await client.chat(model="random", messages=turn, options={**GREEDY, "num_predict": 4})
    async with httpx.AsyncClient(base_url=url) as http:
        await trio.sleep(0.5)  # the report reaches the metrics just after the reply
        before = await http.get("/metrics")
        follow_up = [
            *turn,
            {"role": "assistant", "content": first.message.content},
            {"role": "user", "content": "b"},
        ]
        await client.chat(model="random", messages=follow_up, options={**GREEDY, "num_predict": 4})
        await trio.sleep(0.5)
        after = await http.get("/metrics")
        ps = (await http.get("/api/ps")).json()
    assert first.prompt_eval_count and first.prompt_eval_count > 100

    def hits(text: str) -> float:
        found = re.search(r'^trillm:prefix_cache_hits_total\{model_name="random:latest"\} (\S+)$', text, re.M)
        return float(found.group(1)) if found else 0.0

    assert hits(after.text) - hits(before.text) > 100, (
        "the second turn reads the shared system prompt from the cache"
    )
    (entry,) = [m for m in ps["models"] if m["name"] == "random:latest"]
    placement = entry["distributed"]
    assert placement["ranks"] == 2 and placement["strategy"] == "tensor" and placement["lost"] is None
    sizes = [share["size"] for share in placement["shares"]]
    assert [share["rank"] for share in placement["shares"]] == [0, 1] and all(s > 0 for s in sizes)
    assert sizes[0] < entry["size"], "each rank holds a part of the weights"
    for rank in (0, 1):
        line = f'trillm:distributed_rank_up{{host="127.0.0.1",model_name="random:latest",rank="{rank}"}} 1.0'
        assert line in after.text
        assert (
            f'trillm:distributed_rank_weight_bytes{{host="127.0.0.1",model_name="random:latest",rank="{rank}"}}'
            in after.text
        )


async def test_disconnect_stops_generation_on_both_ranks(pair: tuple[str, str, ServerProcess]) -> None:
    url, _, group = pair
    body = {
        "model": "random",
        "messages": [{"role": "user", "content": "go on"}],
        "options": {**GREEDY, "num_predict": 100000},
    }
    async with httpx.AsyncClient(base_url=url, timeout=60) as http:
        async with http.stream("POST", "/api/chat", json=body) as response:
            received = 0
            async for _line in response.aiter_lines():
                received += 1
                if received == 10:
                    break
    deadline = time.monotonic() + 20
    report = left = None
    while time.monotonic() < deadline and (report is None or left is None):
        await trio.sleep(0.1)
        output = group.output()
        reports = re.findall(r"outcome=cancelled .*generated_tokens=(\d+)", output)
        lefts = re.findall(r"rank 1: sequence \d+ left after (\d+) steps", output)
        report = int(reports[-1]) if reports else None
        left = int(lefts[-1]) if lefts else None
    assert report is not None and left is not None, group.output()[-3000:]
    assert received <= report < 5000, "rank 0 stopped soon after the client left"
    # Rank 1 ran the same steps as rank 0: the prompt's, one per token, and the one in flight.
    assert report <= left <= report + 2


async def test_an_embedding_model_is_served_by_rank_0_alone(
    pair: tuple[str, str, ServerProcess],
) -> None:
    async with httpx.AsyncClient(base_url=pair[0], timeout=60) as http:
        embedded = await http.post("/api/embed", json={"model": "minilm", "input": ["rank 0 alone"]})
    assert embedded.status_code == 200 and len(embedded.json()["embeddings"][0]) > 0


# A greedy stream of the rambling model that only the server can end.
ENDLESS = {
    "model": "random",
    "messages": [{"role": "user", "content": "go"}],
    "options": {**GREEDY, "num_predict": 100000},
}


async def stream_then_signal(http: httpx.AsyncClient, follower: int, signum: int) -> list[dict[str, Any]]:
    """Stream :data:`ENDLESS`, send ``signum`` to rank 1 after five lines, and return every line
    until the server ends the stream (within a minute)."""
    lines: list[dict[str, Any]] = []
    with trio.fail_after(60):
        async with http.stream("POST", "/api/chat", json=ENDLESS) as response:
            async for line in response.aiter_lines():
                lines.append(json.loads(line))
                if len(lines) == 5:
                    os.kill(follower, signum)
    return lines


async def test_a_killed_rank_ends_the_stream_with_an_error_then_503_and_a_restart_restores(
    group_store: Path, tmp_path: Path
) -> None:
    group = ServerProcess.start(group_store, tmp_path / "group.log", "--distributed", "2")
    try:
        (follower,) = group.follower_pids()
        async with httpx.AsyncClient(base_url=group.url, timeout=60) as http:
            lines = await stream_then_signal(http, follower, signal.SIGKILL)
            assert "error" in lines[-1] and "rank 1 (127.0.0.1)" in lines[-1]["error"], lines[-1]
            assert not lines[-1].get("done"), "the stream ends with the error, not a normal end"
            refused = await http.post("/api/chat", json={**ENDLESS, "stream": False})
            assert refused.status_code == 503
            assert "rank 1" in refused.json()["error"] and "restart the group" in refused.json()["error"]
            embedded = await http.post("/api/embed", json={"model": "minilm", "input": ["still here"]})
            assert embedded.status_code == 200, "models rank 0 holds alone keep serving"
            ps = (await http.get("/api/ps")).json()
        (entry,) = [m for m in ps["models"] if m["name"] == "random:latest"]
        assert "rank 1" in entry["distributed"]["lost"]
    finally:
        assert group.stop() == 0
    # Restarted (pipeline parallel this time: each rank holds whole layers), the group serves again.
    restarted = ServerProcess.start(group_store, tmp_path / "again.log", "--distributed", "2", "--pipeline")
    try:
        reply = await ollama.AsyncClient(host=restarted.url).chat(
            model="tiny", messages=[{"role": "user", "content": SCRIPT[1][0]}], options=GREEDY
        )
        assert reply.message.content == SCRIPT[1][1], "pipeline parallel gives the same reply"
        async with httpx.AsyncClient(base_url=restarted.url) as http:
            ps = (await http.get("/api/ps")).json()
        assert ps["models"][0]["distributed"]["strategy"] == "pipeline"
    finally:
        assert restarted.stop() == 0


async def test_an_unreachable_rank_is_lost_after_the_step_timeout(group_store: Path, tmp_path: Path) -> None:
    """A rank that stops answering without closing its connection (here: frozen with SIGSTOP, as a
    machine cut off the network) is lost after ``TRILLM_DISTRIBUTED_TIMEOUT``, not waited for."""
    env = {"TRILLM_DISTRIBUTED_TIMEOUT": "3"}
    group = ServerProcess.start(group_store, tmp_path / "frozen.log", "--distributed", "2", env=env)
    try:
        (follower,) = group.follower_pids()
        async with httpx.AsyncClient(base_url=group.url, timeout=60) as http:
            lines = await stream_then_signal(http, follower, signal.SIGSTOP)
            assert "did not answer within 3 s" in lines[-1].get("error", ""), lines[-1]
            refused = await http.post("/api/chat", json={**ENDLESS, "stream": False})
            assert refused.status_code == 503 and "rank 1" in refused.json()["error"]
    finally:
        try:
            os.kill(follower, signal.SIGKILL)
        except ProcessLookupError:
            pass
        assert group.stop() == 0
