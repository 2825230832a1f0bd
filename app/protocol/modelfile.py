"""Modelfiles: reading one into a create request, and writing one for ``/api/show``.

The grammar is Ollama's: one command per line (``FROM``, ``PARAMETER``, ``SYSTEM``,
``TEMPLATE``, ``MESSAGE``, ``LICENSE``, ``ADAPTER``; case-insensitive), ``#`` comments, and
values that are bare, ``"quoted"`` or ``\"\"\"triple-quoted\"\"\"`` across lines. ``TEMPLATE``
here is a Jinja chat template (the format MLX models carry), not a Go template.
"""

from __future__ import annotations

import json
import re
from typing import Any

from app.protocol.fields import BOOL_OPTIONS, FLOAT_OPTIONS, INT_OPTIONS

COMMANDS = ("from", "parameter", "system", "template", "message", "license", "adapter", "requires")
_TOKEN = re.compile(r'"""(.*?)"""|"((?:[^"\\]|\\.)*)"|(\S.*)', re.S)


class ModelfileError(ValueError):
    """The Modelfile cannot be read; the message names the line."""


def _value(text: str, line: int, *, word: bool = False) -> tuple[str, str]:
    """The first value in ``text`` and what follows it; unquoted, a ``word`` or the rest of the line."""
    stripped = text.lstrip()
    match = _TOKEN.match(stripped)
    if not stripped or match is None:
        raise ModelfileError(f"line {line}: missing value")
    if match.group(1) is not None:
        value = match.group(1)
    elif match.group(2) is not None:
        value = json.loads(f'"{match.group(2)}"')
    else:
        value = match.group(3).split("\n", 1)[0].rstrip()
        if word:
            value = value.split()[0]
        return value, stripped[len(value) :]
    return value, stripped[match.end() :]


def parameter_value(key: str, raw: str) -> Any:
    """A PARAMETER's value with the type the option has (``stop`` stays a string, and may repeat)."""
    try:
        if key in INT_OPTIONS:
            return int(raw)
        if key in FLOAT_OPTIONS:
            return float(raw)
        if key in BOOL_OPTIONS:
            return {"true": True, "false": False}[raw.lower()]
    except (ValueError, KeyError) as error:
        raise ModelfileError(f"PARAMETER {key}: {raw!r} is not a valid value") from error
    return raw


def parse(text: str) -> dict[str, Any]:
    """A ``/api/create`` body (without ``model``) from Modelfile ``text``."""
    out: dict[str, Any] = {}
    lines = text.splitlines()
    index = 0
    while index < len(lines):
        number, raw = index + 1, lines[index].strip()
        index += 1
        if not raw or raw.startswith("#"):
            continue
        word, _, rest = raw.partition(" ")
        command = word.lower()
        if command not in COMMANDS:
            raise ModelfileError(f"line {number}: unknown command {word!r}")
        if rest.count('"""') % 2 == 1:  # a triple-quoted value that goes on over the next lines
            while index < len(lines) and '"""' not in lines[index]:
                rest += "\n" + lines[index]
                index += 1
            if index == len(lines):
                raise ModelfileError(f'line {number}: the """ opened here is never closed')
            rest += "\n" + lines[index]
            index += 1
        if command == "parameter":
            key, rest = _value(rest, number, word=True)
            value, _ = _value(rest, number)
            params = out.setdefault("parameters", {})
            if key == "stop":
                params.setdefault("stop", []).append(value)
            else:
                params[key] = parameter_value(key, value)
        elif command == "message":
            role, rest = _value(rest, number, word=True)
            content, _ = _value(rest, number)
            if role not in ("system", "user", "assistant"):
                raise ModelfileError(f"line {number}: MESSAGE role must be system, user or assistant")
            out.setdefault("messages", []).append({"role": role, "content": content})
        elif command == "adapter":
            raise ModelfileError(f"line {number}: ADAPTER (LoRA adapters) is not supported")
        else:
            value, _ = _value(rest, number)
            out[command] = value
    if "from" not in out:
        raise ModelfileError("a Modelfile needs a FROM line")
    return out


def _quoted(text: str) -> str:
    """Triple quotes keep multi-line text readable; JSON quoting is exact for everything else."""
    if "\n" in text and '"""' not in text and not text.endswith('"'):
        return f'"""{text}"""'
    return json.dumps(text, ensure_ascii=False)


def parameter_lines(parameters: dict[str, Any]) -> list[tuple[str, str]]:
    """``(key, value)`` pairs as ``/api/show`` and Modelfiles write them (one per stop string)."""
    pairs = []
    for key, value in sorted(parameters.items()):
        for item in value if isinstance(value, list) else [value]:
            pairs.append((key, json.dumps(item)))
    return pairs


def render(
    source: str,
    *,
    parameters: dict[str, Any],
    system: str | None,
    template: str | None,
    messages: list[dict[str, Any]],
    license_: str | None,
) -> str:
    """A Modelfile that would recreate the model (``FROM`` names where it came from)."""
    lines = ["# Modelfile generated by trillm", f"FROM {source}"]
    if template is not None:
        lines.append(f"TEMPLATE {_quoted(template)}")
    if system is not None:
        lines.append(f"SYSTEM {_quoted(system)}")
    lines += [f"PARAMETER {key} {value}" for key, value in parameter_lines(parameters)]
    lines += [f"MESSAGE {m['role']} {_quoted(str(m.get('content', '')))}" for m in messages]
    if license_:
        lines.append(f"LICENSE {_quoted(license_)}")
    return "\n".join(lines) + "\n"
