"""An image through three clients: ``ollama`` (a file path), ``openai`` (a data URL) and ``anthropic``
(a base64 block), against one vision model; each prints the model's answer::

    python examples/vision.py MODEL PICTURE.png [--host HOST]

A text-only model answers each with a 400 that says so, which is printed too.
"""

from __future__ import annotations

import argparse
import base64
import mimetypes
from pathlib import Path

import anthropic
import ollama
import openai
from server_address import reachable, server_url

QUESTION = "What is in this picture? Answer in one sentence."


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model")
    parser.add_argument("picture", type=Path)
    parser.add_argument("--host", help="the server (default: TRILLM_HOST, OLLAMA_HOST, 127.0.0.1:11434)")
    args = parser.parse_args()
    url = server_url(args.host)
    reachable(lambda: ask(url, args.model, args.picture), url)


def ask(url: str, model: str, picture: Path) -> None:
    kind = mimetypes.guess_type(picture.name)[0] or "image/png"
    data = base64.b64encode(picture.read_bytes()).decode()
    try:
        reply = ollama.Client(host=url).chat(
            model=model, messages=[{"role": "user", "content": QUESTION, "images": [picture]}]
        )
        print("ollama:", reply.message.content)
    except ollama.ResponseError as error:
        print("ollama refused:", error.error)
        return
    chat = openai.OpenAI(base_url=f"{url}/v1", api_key="unused").chat.completions.create(
        model=model,
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": QUESTION},
                    {"type": "image_url", "image_url": {"url": f"data:{kind};base64,{data}"}},
                ],
            }
        ],
    )
    print("openai:", chat.choices[0].message.content)
    message = anthropic.Anthropic(base_url=url, api_key="unused").messages.create(
        model=model,
        max_tokens=256,
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "image", "source": {"type": "base64", "media_type": kind, "data": data}},
                    {"type": "text", "text": QUESTION},
                ],
            }
        ],
    )
    print("anthropic:", "".join(block.text for block in message.content if block.type == "text"))


if __name__ == "__main__":
    main()
