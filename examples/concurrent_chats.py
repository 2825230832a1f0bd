"""Several chat clients at once, then each one's next turn: batching and the prefix cache at work.

Starts N conversations concurrently over ``/api/chat`` (they share a batch on the server, up to
``TRILLM_NUM_PARALLEL``), prints each one's time to first token and speed, then sends every
conversation a second turn and prints how much of its prompt came from the prefix cache
(``prompt_eval_cached_count``, a field the ``ollama`` package does not expose yet)::

    python examples/concurrent_chats.py MODEL [--host HOST] [--clients 4]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from typing import Any

import httpx
from server_address import reachable, server_url

QUESTIONS = [
    "Why is the sea salty?",
    "Name three uses of a paperclip.",
    "What makes a good cup of tea?",
    "How do bees find flowers?",
    "Why do cats purr?",
    "What is a prime number?",
    "How does a compass work?",
    "Why do leaves change colour?",
]


async def turn(
    client: httpx.AsyncClient, model: str, messages: list[dict[str, Any]], tokens: int
) -> dict[str, Any]:
    """One streamed turn: the reply's text plus the client's own timings and the final metrics."""
    start = time.perf_counter()
    first = None
    text = ""
    final: dict[str, Any] = {}
    body = {"model": model, "messages": messages, "options": {"num_predict": tokens}}
    async with client.stream("POST", "/api/chat", json=body) as r:
        r.raise_for_status()
        async for line in r.aiter_lines():
            part = json.loads(line)
            if "error" in part:
                raise SystemExit(f"error: {part['error']}")
            piece = part.get("message", {}).get("content", "")
            if piece and first is None:
                first = time.perf_counter() - start
            text += piece
            final = part
    return {"text": text, "ttft": first or 0.0, "final": final}


async def conversation(client: httpx.AsyncClient, model: str, question: str, tokens: int) -> None:
    messages: list[dict[str, Any]] = [{"role": "user", "content": question}]
    one = await turn(client, model, messages, tokens)
    messages += [{"role": "assistant", "content": one["text"]}, {"role": "user", "content": "Tell me more."}]
    two = await turn(client, model, messages, tokens)
    rate = one["final"].get("eval_count", 0) / max(one["final"].get("eval_duration", 0), 1) * 1e9
    cached = two["final"].get("prompt_eval_cached_count", 0)
    print(
        f"{question[:32]:34} turn 1: TTFT {one['ttft'] * 1e3:7.0f} ms, {rate:6.1f} tok/s | "
        f"turn 2: TTFT {two['ttft'] * 1e3:7.0f} ms, {cached}/{two['final'].get('prompt_eval_count', 0)} prompt tokens cached"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("--host", help="server address (default: TRILLM_HOST, OLLAMA_HOST, 127.0.0.1:11434)")
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--tokens", type=int, default=64)
    args = parser.parse_args()
    questions = [QUESTIONS[i % len(QUESTIONS)] for i in range(args.clients)]
    url = server_url(args.host)

    async def chats() -> None:
        async with httpx.AsyncClient(base_url=url, timeout=None) as client:
            await asyncio.gather(*(conversation(client, args.model, q, args.tokens) for q in questions))

    reachable(lambda: asyncio.run(chats()), url)


if __name__ == "__main__":
    main()
