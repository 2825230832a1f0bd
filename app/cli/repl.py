"""``trillm run``: a chat in the terminal, streamed token by token.

With a prompt argument or piped input it answers once and exits. Otherwise it is an interactive
loop that keeps the conversation: ``\"\"\"`` starts and ends multi-line input, ``/set`` changes
parameters, the system prompt, the format and thinking, ``/show info`` describes the model,
``/clear`` forgets the conversation and ``/bye`` (or Ctrl+D) leaves. Ctrl+C during an answer stops
that answer (the server stops generating when the connection closes) and returns to the prompt.

With a vision model, a path to an image file in a message (``describe ./cat.png``; quoted when it
holds spaces) attaches that image to the message, as ``ollama run`` does.
"""

from __future__ import annotations

import base64
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from app.cli.http_client import Client, CliError
from app.protocol.modelfile import ModelfileError, parameter_value
from app.protocol.requests import Options

PARAMETERS = frozenset(Options.model_fields)
SHOWN = ("modelfile", "parameters", "system", "template", "license")

DIM, RESET = "\x1b[2m", "\x1b[0m"
HELP = """Available commands:
  /set parameter NAME VALUE   set an option (temperature, num_predict, top_k, seed, stop, ...)
  /set system TEXT            set the system prompt
  /set format json            answer in JSON; /set noformat to stop
  /set think | nothink        turn thinking on or off
  /set verbose | quiet        show or hide timing statistics
  /show info                  describe the model
  /show modelfile | parameters | system | template | license
  /load MODEL                 switch to another model (the conversation starts afresh)
  /save NAME                  save this session's model, system prompt and parameters as NAME
  /clear                      forget the conversation
  /bye                        leave (or Ctrl+D)
Use \"\"\" to begin and end a multi-line message."""


@dataclass
class Session:
    """What one ``run`` keeps between turns."""

    model: str
    options: dict[str, Any] = field(default_factory=dict)
    system: str | None = None
    format: str | None = None
    think: bool | None = None
    verbose: bool = False
    hide_thinking: bool = False
    keep_alive: str | None = None
    vision: bool = False  # the model reads images: image paths in a message attach them
    messages: list[dict[str, Any]] = field(default_factory=list)

    def request(self) -> dict[str, Any]:
        messages = ([{"role": "system", "content": self.system}] if self.system else []) + self.messages
        body: dict[str, Any] = {"model": self.model, "messages": messages, "options": self.options}
        for key, value in (("format", self.format), ("think", self.think), ("keep_alive", self.keep_alive)):
            if value is not None:
                body[key] = value
        return body


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp")
_PATH = re.compile(r"""'([^']+)'|"([^"]+)"|(\S+)""")


def attach_images(prompt: str, out: TextIO) -> tuple[str, list[str]]:
    """The prompt without the paths of the image files it names, and those images in base64."""
    images: list[str] = []

    def take(match: re.Match[str]) -> str:
        word = next(group for group in match.groups() if group is not None)
        path = Path(word).expanduser()
        if path.suffix.lower() not in IMAGE_SUFFIXES or not path.is_file():
            return match.group(0)
        images.append(base64.b64encode(path.read_bytes()).decode())
        out.write(f"Added image '{word}'\n")
        return ""

    text = _PATH.sub(take, prompt)
    return (" ".join(text.split()) if images else prompt), images


def answer(client: Client, session: Session, prompt: str, out: TextIO) -> None:
    """Send ``prompt``, stream the reply to ``out`` and add both to the conversation."""
    message: dict[str, Any] = {"role": "user", "content": prompt}
    if session.vision:
        message["content"], images = attach_images(prompt, out)
        if images:
            message["images"] = images
    session.messages.append(message)
    dim = out.isatty()
    started = time.perf_counter()
    first: float | None = None
    text, thinking_open, final = [], False, None
    try:
        for part in client.stream("/api/chat", session.request()):
            message = part.get("message") or {}
            thought, content = message.get("thinking", ""), message.get("content", "")
            if (thought or content) and first is None:
                first = time.perf_counter() - started
            if thought and not session.hide_thinking:
                if not thinking_open:
                    out.write((DIM if dim else "") + "Thinking...\n")
                    thinking_open = True
                out.write(thought)
            if content:
                if thinking_open:
                    out.write("\n...done thinking.\n\n" + (RESET if dim else ""))
                    thinking_open = False
                out.write(content)
                text.append(content)
            out.flush()
            if part.get("done"):
                final = part
    except KeyboardInterrupt:
        # The terminal has echoed ^C already.
        out.write((RESET if dim and thinking_open else "") + " (stopped)\n")
        session.messages.pop()  # an unanswered question is not part of the conversation
        return
    except CliError:
        session.messages.pop()
        raise
    if thinking_open and dim:
        out.write(RESET)
    out.write("\n\n" if text and not "".join(text).endswith("\n") else "\n")
    session.messages.append({"role": "assistant", "content": "".join(text)})
    if session.verbose and final is not None:
        out.write(statistics(final, first, time.perf_counter() - started))
    out.flush()


def statistics(final: dict[str, Any], first_token: float | None, total: float) -> str:
    """Timings as ``ollama run --verbose`` prints them. The total and the time to the first token
    are both this client's clock (so the first never exceeds the total); the rest are the server's."""

    def seconds(ns: int) -> str:
        return f"{ns / 1e9:.6f}s"

    def rate(count: int, ns: int) -> str:
        return f"{count / (ns / 1e9):.2f} tokens/s" if ns else "n/a"

    prompt_n, prompt_ns = final.get("prompt_eval_count", 0), final.get("prompt_eval_duration", 0)
    eval_n, eval_ns = final.get("eval_count", 0), final.get("eval_duration", 0)
    rows = [
        ("total duration", f"{total:.6f}s"),
        ("load duration", seconds(final.get("load_duration", 0))),
        ("time to first token", f"{first_token:.6f}s" if first_token is not None else "n/a"),
        ("prompt eval count", f"{prompt_n} token(s)"),
        ("prompt eval duration", seconds(prompt_ns)),
        ("prompt eval rate", rate(prompt_n, prompt_ns)),
        ("eval count", f"{eval_n} token(s)"),
        ("eval duration", seconds(eval_ns)),
        ("eval rate", rate(eval_n, eval_ns)),
    ]
    return "".join(f"{name + ':':<22}{value}\n" for name, value in rows)


def command(client: Client, session: Session, line: str, out: TextIO) -> bool:
    """Handle one ``/`` command; returns False when the user leaves."""
    words = line.split(maxsplit=3)
    head = words[0].lower()
    if head in ("/bye", "/exit"):
        return False
    if head in ("/?", "/help"):
        out.write(HELP + "\n")
    elif head == "/clear":
        session.messages.clear()
        out.write("Cleared session context\n")
    elif head == "/show" and len(words) > 1 and words[1] == "info":
        show_info(client.call("POST", "/api/show", {"model": session.model}).json(), out)
    elif head == "/show" and len(words) > 1 and words[1] in SHOWN:
        shown = client.call("POST", "/api/show", {"model": session.model}).json()
        text = shown.get(words[1]) or ""
        if words[1] == "system" and session.system is not None:
            text = session.system
        if words[1] == "parameters" and session.options:
            text += "".join(f"{k:<20}{v}\n" for k, v in session.options.items())
        out.write((text.rstrip("\n") or f"No {words[1]} was specified for this model.") + "\n")
    elif head == "/load" and len(words) == 2:
        load(client, words[1], out)
        session.model = words[1]
        shown = client.call("POST", "/api/show", {"model": words[1]}).json()
        session.vision = "vision" in (shown.get("capabilities") or [])
        session.messages.clear()
    elif head == "/save" and len(words) == 2:
        save(client, session, words[1])
        out.write(f"Created new model '{words[1]}'\n")
    elif head == "/set" and len(words) > 1:
        set_option(session, words[1:], line, out)
    else:
        out.write(f"Unknown command '{words[0]}'. Type /? for help\n")
    return True


def load(client: Client, model: str, out: TextIO) -> None:
    """Load ``model`` now, with a spinner on a terminal, so that a load error shows before the
    first prompt rather than after it."""
    from rich.console import Console

    console = Console(file=out, stderr=False)
    with console.status(f"loading {model}", spinner="dots") if out.isatty() else _nothing():
        for _ in client.stream("/api/generate", {"model": model}):
            pass  # an error line is raised as CliError


def save(client: Client, session: Session, name: str) -> None:
    """``/save``: a model made of this session's model, system prompt and parameters."""
    body: dict[str, Any] = {"model": name, "from": session.model, "stream": False}
    if session.system is not None:
        body["system"] = session.system
    if session.options:
        body["parameters"] = session.options
    client.call("POST", "/api/create", body)


class _nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *_: object) -> None:
        return None


def set_option(session: Session, words: list[str], line: str, out: TextIO) -> None:
    what = words[0].lower()
    if what == "parameter" and len(words) == 3:
        key, raw = words[1], words[2]
        if key not in PARAMETERS:
            out.write(f"Unknown parameter '{key}'; known: {', '.join(sorted(PARAMETERS))}\n")
            return
        try:
            value = parameter_value(key, raw)
        except ModelfileError as error:
            out.write(f"Error: {error}\n")
            return
        if key == "stop":
            session.options["stop"] = raw.split()
        else:
            session.options[key] = value
        out.write(f"Set parameter '{key}' to '{raw}'\n")
    elif what == "system":
        session.system = line.split(maxsplit=2)[2] if len(line.split(maxsplit=2)) == 3 else ""
        out.write("Set system message.\n")
    elif what == "format" and len(words) > 1 and words[1] == "json":
        session.format = "json"
        out.write("Set format to 'json' mode.\n")
    elif what == "noformat":
        session.format = None
        out.write("Disabled format.\n")
    elif what in ("think", "nothink"):
        session.think = what == "think"
        out.write(f"Set '{what}' mode.\n")
    elif what in ("verbose", "quiet"):
        session.verbose = what == "verbose"
        out.write(f"Set '{what}' mode.\n")
    else:
        out.write(
            "Usage: /set parameter NAME VALUE | system TEXT | format json | noformat | think | nothink\n"
        )


def show_info(shown: dict[str, Any], out: TextIO) -> None:
    """A summary of an ``/api/show`` answer: architecture, size, context, quantisation, capabilities."""
    details = shown.get("details", {})
    info = shown.get("model_info", {})
    arch = info.get("general.architecture", details.get("family", ""))
    rows = [
        ("architecture", arch),
        ("parameters", details.get("parameter_size", "")),
        ("context length", info.get(f"{arch}.context_length", "")),
        ("quantization", details.get("quantization_level", "")),
        ("capabilities", ", ".join(shown.get("capabilities", []))),
    ]
    out.write("  Model\n" + "".join(f"    {k:<20}{v}\n" for k, v in rows))
    if shown.get("system"):
        out.write(f"  System\n    {shown['system']}\n")


def read_message(prompt: str = ">>> ") -> str:
    """One message from the terminal; between two \"\"\" lines it spans several."""
    line = input(prompt)
    if not line.lstrip().startswith('"""'):
        return line
    parts = [line.lstrip()[3:]]
    while '"""' not in parts[-1]:
        parts.append(input("... "))
    joined = "\n".join(parts)
    return joined[: joined.index('"""')].strip("\n")


def interactive(client: Client, session: Session, out: TextIO) -> None:
    try:
        import readline  # noqa: F401  (line editing and history for input())
    except ImportError:  # pragma: no cover - Windows
        pass
    load(client, session.model, out)
    out.write("Send a message (/? for help)\n")
    while True:
        try:
            line = read_message()
        except KeyboardInterrupt:
            out.write("\nUse Ctrl + d or /bye to exit.\n")
            continue
        except EOFError:
            out.write("\n")
            return
        if not line.strip():
            continue
        if line.startswith("/"):
            try:
                if not command(client, session, line.strip(), out):
                    return
            except CliError as error:
                out.write(f"Error: {error}\n")
            continue
        try:
            answer(client, session, line, out)
        except CliError as error:
            out.write(f"Error: {error}\n")


def run(client: Client, session: Session, prompt: str) -> None:
    """Answer ``prompt`` (or piped input) once, or chat interactively when there is neither."""
    if not sys.stdin.isatty():  # piped text comes first, then the arguments, as in Ollama
        piped = sys.stdin.read()
        prompt = f"{piped} {prompt}" if piped and prompt else piped or prompt
    if prompt:
        answer(client, session, prompt, sys.stdout)
    else:
        interactive(client, session, sys.stdout)
