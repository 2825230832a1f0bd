"""Manage models on a trillm server with the official ``ollama`` client: pull, create, copy, delete.

    python examples/manage_models.py mlx-community/Qwen2.5-0.5B-Instruct-4bit [HOST]

Pulls the model (printing progress), makes a variant with its own system prompt and defaults,
asks the variant one question, copies it, lists what is stored, then deletes both variants.
"""

from __future__ import annotations

import sys

import ollama
from server_address import reachable, server_url


def main(model: str, host: str | None = None) -> None:
    client = ollama.Client(host=server_url(host))
    for progress in client.pull(model, stream=True):
        if progress.total:
            print(f"\r{progress.status}: {progress.completed or 0}/{progress.total} bytes", end="")
        else:
            print(f"\n{progress.status}", end="")
    print()
    client.create(
        model="pirate",
        from_=model,
        system="You are a pirate. Answer in one sentence.",
        parameters={"temperature": 0.3, "num_predict": 64},
    )
    reply = client.chat(model="pirate", messages=[{"role": "user", "content": "Where is the treasure?"}])
    print(reply.message.content)
    client.copy("pirate", "crew/pirate:v2")
    print([m.model for m in client.list().models])
    print(client.show("crew/pirate:v2").modelfile)
    for name in ("pirate", "crew/pirate:v2"):
        client.delete(name)


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    reachable(lambda: main(*sys.argv[1:3]), server_url(sys.argv[2] if len(sys.argv) > 2 else None))
