"""The real-world schema corpus (``tests/data/schemas``, written by ``tests.support.gather_schemas``):
how many of them the server accepts for ``format``, enforced in full or in part.

Compile only; replies to a sample are checked end to end in ``tests/models/test_structured.py``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from validation.request_checks import FieldError
from validation.structured import compile_schema

CORPUS = Path(__file__).resolve().parents[1] / "data" / "schemas"
TARGET = 0.97


def corpus() -> dict[str, dict[str, Any]]:
    return {f.stem: json.loads(f.read_text())["schema"] for f in sorted(CORPUS.glob("*.json"))}


def test_the_corpus_is_accepted() -> None:
    schemas = corpus()
    assert len(schemas) >= 150
    refused: dict[str, str] = {}
    approximated, seconds = 0, []
    for name, schema in schemas.items():
        start = time.perf_counter()
        try:
            approximated += bool(compile_schema(schema).approximated)
        except FieldError as error:
            refused[name] = str(error)
        seconds.append(time.perf_counter() - start)
    rate = 1 - len(refused) / len(schemas)
    seconds.sort()
    print(
        f"\n{len(schemas)} schemas: {rate:.1%} accepted ({approximated} enforced in part), "
        f"compile median {seconds[len(seconds) // 2] * 1e3:.1f} ms, p99 {seconds[int(len(seconds) * 0.99)] * 1e3:.0f} ms"
    )
    for name, why in refused.items():
        print(f"  refused {name}: {why[:120]}")
    assert rate >= TARGET, refused


def test_a_refused_schema_is_still_a_clear_error() -> None:
    for bad in ({"type": "strin"}, {"type": "string", "pattern": "(("}, {"$ref": "#/$defs/missing"}):
        try:
            compile_schema(bad)
        except FieldError as error:
            assert "format" in str(error)
        else:
            raise AssertionError(f"{bad} was accepted")


def test_the_corpus_is_accepted_as_tool_parameters() -> None:
    """The same schemas as a tool's ``parameters`` (those with an object at the root, as tools
    take): the call grammar enforces what it can and the validator the rest."""
    from app.protocol.errors import BadRequest
    from app.protocol.steering import tool_enforcement
    from validation.toolset import ToolSet

    objects = {n: s for n, s in corpus().items() if s.get("type") == "object" and "$ref" not in s}
    assert len(objects) >= 50
    refused: dict[str, str] = {}
    approximated = 0
    for name, schema in objects.items():
        tool = {"type": "function", "function": {"name": "call_it", "parameters": schema}}
        try:
            approximated += bool(tool_enforcement("hermes", ToolSet([tool])))
        except (BadRequest, FieldError) as error:
            refused[name] = str(error)
    rate = 1 - len(refused) / len(objects)
    print(f"\n{len(objects)} tool schemas: {rate:.1%} accepted ({approximated} enforced in part)")
    assert rate >= TARGET, refused
