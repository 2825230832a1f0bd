"""The ``trillm`` command: ``serve`` starts the server; every other command talks to it over HTTP.

``run``, ``pull``, ``create``, ``list``/``ls``, ``ps``, ``show``, ``rm``, ``cp`` and ``stop``
behave like their ``ollama`` namesakes. Failures print ``Error: <message>`` and exit with 1.
"""

from __future__ import annotations

import argparse
import errno
import json
import logging
import os
import re
import socket
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import trio

from app import __version__
from app.cli.http_client import Client, CliError, server_message
from app.config import Settings, environment_help
from inference.store.model_store import sha256_file

EXAMPLE_MODEL = "mlx-community/Qwen2.5-0.5B-Instruct-4bit"  # the README's model, too


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="trillm", description="A local LLM server speaking Ollama's API.")
    parser.add_argument("-v", "--version", action="version", version=f"trillm version is {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    def command(name: str, text: str, *aliases: str, epilog: str | None = None) -> argparse.ArgumentParser:
        cmd = sub.add_parser(
            name,
            aliases=list(aliases),
            help=text,
            description=text,
            epilog=epilog,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        if name != "serve":
            cmd.add_argument("--host", help="server address, host[:port] (TRILLM_HOST, OLLAMA_HOST)")
        return cmd

    serve = command("serve", "start the server", "start", epilog=environment_help())
    serve.add_argument("--host", help="address to bind, host[:port] (TRILLM_HOST, OLLAMA_HOST)")
    serve.add_argument("--models", help="model store directory (TRILLM_MODELS)")
    serve.add_argument(
        "--distributed",
        metavar="HOSTS",
        help="serve MLX models across several ranks: MLX's host file (JSON), or a number of local ranks",
    )
    serve.add_argument(
        "--pipeline",
        action="store_true",
        help="with --distributed: pipeline parallel (TRILLM_DISTRIBUTED_PIPELINE)",
    )
    serve.add_argument("--follower", action="store_true", help=argparse.SUPPRESS)  # ranks 1.. of a group
    run = command("run", "chat with a model (pulled first if missing)")
    run.add_argument("model")
    run.add_argument("prompt", nargs="*", help="answer this once and exit (stdin works too)")
    run.add_argument("--verbose", action="store_true", help="print timings after each answer")
    run.add_argument("--hidethinking", action="store_true", help="do not print the model's thinking")
    run.add_argument("--think", choices=["true", "false"], help="turn thinking on or off")
    run.add_argument("--format", help='"json" for JSON answers')
    run.add_argument("--keepalive", help="how long the model stays loaded (e.g. 5m)")
    run.add_argument("--nowordwrap", action="store_true", help="accepted for compatibility")
    command("pull", "download a model from Hugging Face").add_argument("model")
    create = command("create", "create a model from a Modelfile")
    create.add_argument("model")
    create.add_argument("-f", "--file", default="Modelfile", help="the Modelfile (default ./Modelfile)")
    command("list", "list stored models", "ls")
    command("ps", "list loaded models")
    show = command("show", "describe a model")
    show.add_argument("model")
    for flag in ("modelfile", "parameters", "template", "system", "license"):
        show.add_argument(f"--{flag}", action="store_true", help=f"only the {flag}")
    rm = command("rm", "delete models")
    rm.add_argument("models", nargs="+")
    rm.add_argument(
        "-f", "--force", action="store_true", help="do not ask before deleting a hand-placed model"
    )
    cp = command("cp", "copy a model")
    cp.add_argument("source")
    cp.add_argument("destination")
    command("stop", "unload a model now").add_argument("model")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if args.command == "run" and not any(word.startswith("-") for word in extra):
        args.prompt += extra  # flags after the model name: ``trillm run MODEL --verbose "..."``
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if args.command is None:  # bare ``trillm``: what it can do
        parser.print_help()
        return 0
    if args.command in ("serve", "start"):
        return _serve(args.host, args.models, args)
    client = Client(args.host)
    try:
        client.check()
        COMMANDS[args.command](client, args)
        sys.stdout.flush()
    except CliError as error:
        print(f"Error: {_with_hint(client, error)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (``trillm ps | head -1``): stop quietly, as a Unix tool does.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    finally:
        client.close()
    return 0


def _with_hint(client: Client, error: CliError) -> str:
    """A "not found" error with what to do: pull it, or the local names closest to it."""
    message = str(error)
    found = re.fullmatch(r"model '(.+)' not found", message)
    if found is None:
        return message
    try:
        return _not_found(client, found.group(1))
    except (CliError, httpx.HTTPError):
        return message


def _serve(host: str | None, models: str | None, args: argparse.Namespace) -> int:
    from app.edge.security import InsecureBind, check_exposure
    from app.server import create_app, serve
    from inference.backends.mlx.backend import release_mlx_streams, wedged
    from inference.backends.mlx.distributed import startup
    from inference.backends.mlx.distributed.launcher import HostfileError

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        settings = Settings.from_env(host=host, models=models)
    except ValueError as error:
        print(f"Error: invalid configuration: {error}", file=sys.stderr)
        return 1
    settings.distributed_pipeline |= args.pipeline
    rank = startup.launched_rank()
    if args.follower or (rank is not None and rank > 0 and args.distributed is None):
        return startup.run_follower(settings.models, openblas=settings.mlx_openblas)
    try:
        check_exposure(settings)
    except InsecureBind as error:
        print(f"Error: {error}", file=sys.stderr)
        return 1
    busy = address_in_use(settings.host, settings.port)
    if busy:
        print(f"Error: {busy}", file=sys.stderr)
        return 1
    settings.models.mkdir(parents=True, exist_ok=True)
    ranks = None
    if args.distributed is not None or rank is not None:
        try:
            ranks = startup.start_group(
                args.distributed,
                pipeline=settings.distributed_pipeline,
                port=settings.distributed_port,
                openblas=settings.mlx_openblas,
                timeout=settings.distributed_timeout,
            )
        except HostfileError as error:
            print(f"Error: {error}", file=sys.stderr)
            return 1
    app = create_app(settings, ranks=ranks)
    logging.getLogger("trillm").info(
        "serving models from %s on %s:%d", settings.models, settings.host, settings.port
    )
    try:
        trio.run(serve, app, settings)
    except OSError as error:  # taken between the check and the bind
        if error.errno != errno.EADDRINUSE:
            raise
        print(f"Error: {in_use_message(settings.host, settings.port)}", file=sys.stderr)
        return 1
    release_mlx_streams()  # the main thread's, if it used MLX; the worker's went with it
    if wedged():
        # A thread is still inside a collective with a lost rank: MLX's exit would wait for it.
        logging.getLogger("trillm").warning("exiting without waiting for the lost rank's collective")
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
    return 0


def in_use_message(host: str, port: int) -> str:
    return (
        f"listen tcp {host}:{port}: address already in use — is another server (Ollama?) running? "
        "Set TRILLM_HOST to use another port"
    )


def address_in_use(host: str, port: int) -> str | None:
    """Why ``host:port`` cannot be served (another process listens there), or None."""
    if port == 0:
        return None
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError:
        return None  # Hypercorn reports a bad host itself
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as Hypercorn binds
        try:
            probe.bind(address)
        except OSError as error:
            if error.errno == errno.EADDRINUSE:
                return in_use_message(host, port)
    return None


def _pull(client: Client, args: argparse.Namespace) -> None:
    from rich.console import Console

    from app.cli.progress_bars import show_progress

    show_progress(client.stream("/api/pull", {"model": args.model}), Console(stderr=True))


def _run(client: Client, args: argparse.Namespace) -> None:
    from app.cli import repl

    response = client.http.post("/api/show", json={"model": args.model})
    if response.status_code == 404:
        if not _pullable(args.model):
            raise CliError(_not_found(client, args.model))
        _pull(client, args)
        response = client.http.post("/api/show", json={"model": args.model})
    elif response.is_error:
        raise CliError(server_message(response))
    elif response.json().get("capabilities") == ["embedding"]:
        return _print_embedding(client, args)
    capabilities = (response.json().get("capabilities") if response.is_success else None) or []
    session = repl.Session(
        model=args.model,
        verbose=args.verbose,
        hide_thinking=args.hidethinking,
        think=None if args.think is None else args.think == "true",
        format=args.format,
        keep_alive=args.keepalive,
        vision="vision" in capabilities,
    )
    repl.run(client, session, " ".join(args.prompt))


def _print_embedding(client: Client, args: argparse.Namespace) -> None:
    """``run`` of an embedding model prints the input's vector as a JSON array, as ``ollama run``
    does; the input is the arguments, after piped text."""
    text = " ".join(args.prompt)
    if not sys.stdin.isatty():
        piped = sys.stdin.read().strip()
        text = f"{piped} {text}".strip() if piped else text
    if not text:
        raise CliError(
            f"{args.model} is an embedding model: give it text, e.g. trillm run {args.model} 'hello'"
        )
    body = {"model": args.model, "input": text} | ({"keep_alive": args.keepalive} if args.keepalive else {})
    vector = client.call("POST", "/api/embed", body).json()["embeddings"][0]
    print(json.dumps(vector))


def _pullable(name: str) -> bool:
    """Whether ``name`` could be a Hugging Face repo id, the only thing ``pull`` fetches."""
    return "/" in name.removeprefix("hf.co/").removeprefix("huggingface.co/")


def _not_found(client: Client, name: str) -> str:
    """The message for a name that is neither stored nor pullable, with the closest local names."""
    import difflib

    listed = client.http.get("/api/tags")
    names = [m["name"] for m in listed.json().get("models", [])] if listed.is_success else []
    short = {n.removesuffix(":latest"): n for n in names}
    close = difflib.get_close_matches(name.removesuffix(":latest"), list(short), n=3, cutoff=0.5)
    message = f"model '{name}' not found, try pulling it first"
    if close:
        message += f"; the closest local models are {', '.join(close)}"
    elif names:
        message += "; `trillm list` shows the local models"
    return (
        message + ". `trillm pull` takes a Hugging Face repo id: ORG/REPO for an MLX model "
        f"(e.g. {EXAMPLE_MODEL}) or hf.co/ORG/REPO:QUANT for a GGUF"
    )


def _create(client: Client, args: argparse.Namespace) -> None:
    from rich.console import Console

    from app.cli.progress_bars import show_progress
    from app.protocol.modelfile import ModelfileError, parse

    path = Path(args.file)
    try:
        body: dict[str, Any] = parse(path.read_text())
    except OSError as error:
        raise CliError(f"cannot read {path}: {error.strerror}") from error
    except ModelfileError as error:
        raise CliError(f"{path}: {error}") from error
    source = Path(body["from"]).expanduser()
    if not source.is_absolute():
        source = path.parent / source
    if body["from"].startswith((".", "/", "~")) or source.is_dir():
        if not source.is_dir():
            raise CliError(f"FROM {body['from']}: no such directory")
        body["files"] = _upload(client, source)
        del body["from"]
    body["model"] = args.model
    show_progress(client.stream("/api/create", body), Console(stderr=True))


def _upload(client: Client, directory: Path) -> dict[str, str]:
    """Send each file of ``directory`` as a blob the server does not have yet; name -> digest."""
    files = {}
    for file in sorted(p for p in directory.rglob("*") if p.is_file()):
        relative = file.relative_to(directory).as_posix()
        if any(part.startswith(".") for part in relative.split("/")):
            continue
        name = f"sha256:{sha256_file(file)}"
        if client.http.head(f"/api/blobs/{name}").status_code != 200:
            print(f"copying file {relative}", file=sys.stderr)
            with file.open("rb") as handle:
                response = client.http.post(f"/api/blobs/{name}", content=handle)
            if response.is_error:
                raise CliError(f"uploading {relative}: {server_message(response)}")
        files[relative] = name
    return files


def _size(n: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"


def _ago(stamp: str) -> str:
    seconds = (datetime.now().astimezone() - datetime.fromisoformat(stamp)).total_seconds()
    return _span(seconds) + " ago" if seconds >= 1 else "Less than a second ago"


def _span(seconds: float) -> str:
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60), ("second", 1)):
        if seconds >= size:
            count = int(seconds // size)
            return f"{count} {unit}{'s' if count != 1 else ''}"
    return "0 seconds"


def _table(rows: list[list[str]]) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("    ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())


def _list(client: Client, args: argparse.Namespace) -> None:
    models = client.call("GET", "/api/tags").json()["models"]
    rows = [["NAME", "ID", "SIZE", "MODIFIED"]]
    rows += [[m["name"], m["digest"][:12], _size(m["size"]), _ago(m["modified_at"])] for m in models]
    _table(rows)


def _ps(client: Client, args: argparse.Namespace) -> None:
    models = client.call("GET", "/api/ps").json()["models"]
    rows = [["NAME", "ID", "SIZE", "PROCESSOR", "CONTEXT", "UNTIL"]]
    for m in models:
        left = (datetime.fromisoformat(m["expires_at"]) - datetime.now().astimezone()).total_seconds()
        until = "Forever" if left > 100 * 365 * 86400 else f"{_span(max(left, 0))} from now"
        processor = "100% GPU" if m.get("size_vram") else "100% CPU"
        rows.append(
            [m["name"], m["digest"][:12], _size(m["size"]), processor, str(m["context_length"]), until]
        )
    _table(rows)


def _show(client: Client, args: argparse.Namespace) -> None:
    shown = client.call("POST", "/api/show", {"model": args.model}).json()
    for flag in ("modelfile", "parameters", "template", "system", "license"):
        if getattr(args, flag):
            print(shown.get(flag, ""))
            return
    from app.cli import repl

    repl.show_info(shown, sys.stdout)
    if shown.get("parameters"):
        print(
            "  Parameters\n" + "".join(f"    {line}\n" for line in shown["parameters"].splitlines()), end=""
        )


def _rm(client: Client, args: argparse.Namespace) -> None:
    for name in args.models:
        entry = client.call("POST", "/api/show", {"model": name}).json().get("store_entry") or {}
        if entry.get("kind") in ("file", "directory") and not args.force:
            if not _confirm(f"'{name}' is {entry['path']}, placed in the store by hand. Delete it?"):
                raise CliError(
                    f"'{name}' was not deleted (trillm rm --force {name} deletes it without asking)"
                )
        client.call("DELETE", "/api/delete", {"model": name})
        print(f"deleted '{name}'")


def _confirm(question: str) -> bool:
    """A yes from the terminal; without one (piped input), no."""
    if not sys.stdin.isatty():
        return False
    try:
        return input(f"{question} [y/N] ").strip().lower() in ("y", "yes")
    except EOFError:
        return False


def _cp(client: Client, args: argparse.Namespace) -> None:
    client.call("POST", "/api/copy", {"source": args.source, "destination": args.destination})
    print(f"copied '{args.source}' to '{args.destination}'")


def _stop(client: Client, args: argparse.Namespace) -> None:
    reply = client.call("POST", "/api/generate", {"model": args.model, "keep_alive": 0, "stream": False})
    if reply.json().get("done_reason") != "unload":
        raise CliError(f"could not unload {args.model}")


COMMANDS = {
    "run": _run,
    "pull": _pull,
    "create": _create,
    "list": _list,
    "ls": _list,
    "ps": _ps,
    "show": _show,
    "rm": _rm,
    "cp": _cp,
    "stop": _stop,
}
