"""The ``trillm`` command: ``serve`` starts the server; ``run`` streams a reply from it."""

from __future__ import annotations

import argparse
import json
import logging
import sys

import trio

from app.config import Settings, parse_host


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="trillm", description="A local LLM server speaking Ollama's API.")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", aliases=["start"], help="start the server")
    serve.add_argument("--host", help="address to bind, host[:port] (TRILLM_HOST, OLLAMA_HOST)")
    serve.add_argument("--models", help="model store directory (TRILLM_MODELS)")
    run = sub.add_parser("run", help="send a prompt to a model and stream the answer")
    run.add_argument("model")
    run.add_argument("prompt", nargs="*")
    run.add_argument("--host", help="server address (TRILLM_HOST, OLLAMA_HOST)")
    args = parser.parse_args(argv)
    if args.command in ("serve", "start"):
        return _serve(args.host, args.models)
    return _run(args.host, args.model, " ".join(args.prompt))


def _serve(host: str | None, models: str | None) -> int:
    from app.server import create_app, serve

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = Settings.from_env(host=host, models=models)
    settings.models.mkdir(parents=True, exist_ok=True)
    app = create_app(settings)
    logging.getLogger("trillm").info(
        "serving models from %s on %s:%d", settings.models, settings.host, settings.port
    )
    trio.run(serve, app, settings)
    return 0


def _run(host: str | None, model: str, prompt: str) -> int:
    import httpx

    settings = Settings.from_env(host=host)
    address, port = parse_host(f"{settings.host}:{settings.port}") if host is None else parse_host(host)
    url = f"http://{address}:{port}/api/chat"
    messages = [{"role": "user", "content": prompt or sys.stdin.read()}]
    with httpx.stream("POST", url, json={"model": model, "messages": messages}, timeout=None) as r:
        if r.status_code != 200:
            r.read()
            print(f"Error: {r.json().get('error', r.text)}", file=sys.stderr)
            return 1
        for raw in r.iter_lines():
            part = json.loads(raw)
            if "error" in part:
                print(f"\nError: {part['error']}", file=sys.stderr)
                return 1
            print(part["message"]["content"], end="", flush=True)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
