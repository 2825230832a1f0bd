"""The disconnect storm's clients, run in their own process by ``tests/http/test_storm.py``.

Usage: ``python -m tests.support.storm_clients URL COUNT AT_ONCE SEED``. Each client sends one request
(native or OpenAI, streamed or not, to a decoding model or to one that prefills slowly) and goes
away at a random moment: after 1 to 50 lines, after a short wait for a non-streamed answer, or
when it has waited too long in the queue. Hundreds of httpx clients would otherwise share the
server's own Trio loop, and on two cores the server would mostly be measuring them. Prints one
JSON line: how many clients ran and how many gave up before their answer began.
"""

from __future__ import annotations

import json
import random
import sys

import httpx
import trio


async def one_client(client: httpx.AsyncClient, rng: random.Random) -> bool:
    """One client's request, abandoned at a random point; True if an answer began."""
    model = rng.choice(["slow", "slow", "prefill"])
    native = rng.random() < 0.5
    stream = rng.random() < 0.7
    lines = rng.randint(1, 50)
    prompt = "x" * rng.choice([1, 200])
    if native:
        path, body = "/api/chat", {"model": model, "messages": [{"role": "user", "content": prompt}]}
        # Prefill in chunks of 2 tokens (20 ms on the fake): no step longer than a decode step.
        body["options"] = {"num_batch": 2}
    else:
        path = "/v1/chat/completions"  # no num_batch here: the OpenAI clients decode only
        body = {"model": "slow", "messages": [{"role": "user", "content": prompt}]}
    body["stream"] = stream
    if not stream:
        with trio.move_on_after(rng.uniform(0.05, 0.5)):
            await client.post(path, json=body)
        return True
    began = False
    with trio.move_on_after(rng.uniform(1.0, 4.0)):  # queued too long: leave
        async with client.stream("POST", path, json=body) as response:
            began = True
            seen = 0
            async for line in response.aiter_lines():
                seen += bool(line.strip())
                if seen >= lines:
                    break
    return began


async def storm(url: str, count: int, at_once: int, seed: int) -> dict[str, int]:
    rng = random.Random(seed)
    limiter = trio.CapacityLimiter(at_once)
    began = 0

    # One connection per request, closed when the client leaves (no keep-alive pool); one
    # httpx client for all, as building hundreds of them costs seconds of CPU.
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=0)
    async with httpx.AsyncClient(base_url=url, timeout=30, limits=limits) as client:

        async def limited(client_seed: int) -> None:
            nonlocal began
            async with limiter:
                answered = await one_client(client, random.Random(client_seed))
                began += answered

        async with trio.open_nursery() as nursery:
            for _ in range(count):
                nursery.start_soon(limited, rng.randrange(1 << 30))
    return {"clients": count, "answered": began}


def main() -> None:
    url, count, at_once, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    print(json.dumps(trio.run(storm, url, count, at_once, seed)))


if __name__ == "__main__":
    main()
