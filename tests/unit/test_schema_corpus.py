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
