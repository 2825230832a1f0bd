"""The request models are the API: every documented field is accepted, every field read is documented.

The models in ``app/protocol/requests.py`` check bodies and generate ``/openapi.json``; routes see
only the fields a model declares. Here: each documented field, sent with its example, is accepted
by the real server (or refused by name where the document says "refused"), and every key the
HTTP layer reads from a body is declared by a model (a static scan, so a new read cannot slip in
undocumented).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from app.protocol.openapi import MODELS
from app.protocol.requests import (
    Body,
    ChatCompletionRequest,
    ChatRequest,
    CompletionRequest,
    CopyRequest,
    CreateRequest,
    GenerateRequest,
    Options,
    ShowRequest,
)
from tests.conftest import Server, write_fake

ROOT = Path(__file__).resolve().parents[2]
USER = [{"role": "user", "content": "hi"}]
# Each model's route and the smallest body it answers 200 to.
ROUTES: dict[type[Body], tuple[str, dict[str, Any]]] = {
    ChatRequest: ("/api/chat", {"model": "fake", "messages": USER, "stream": False}),
    GenerateRequest: ("/api/generate", {"model": "fake", "prompt": "hi", "stream": False}),
    ShowRequest: ("/api/show", {"model": "fake"}),
    CreateRequest: ("/api/create", {"model": "made", "from": "fake", "stream": False}),
    CopyRequest: ("/api/copy", {"source": "fake", "destination": "fake-copy"}),
    ChatCompletionRequest: ("/v1/chat/completions", {"model": "fake", "messages": USER}),
    CompletionRequest: ("/v1/completions", {"model": "fake", "prompt": "hi"}),
}


def documented(model: type[Body]) -> list[tuple[str, Any]]:
    return [(f.alias or name, f.examples[0]) for name, f in model.model_fields.items() if f.examples]


# Fields that need a model able to honour them: a JSON script for format, a template that thinks.
CAPABLE = {"format": "fakejson", "think": "thinker", "reasoning_effort": "thinker"}
CASES = [
    pytest.param(model, key, value, id=f"{model.__name__}.{key}")
    for model, (_, base) in ROUTES.items()
    for key, value in documented(model)
    if key not in base
]
CASES += [
    pytest.param(ChatRequest, "options", {key: value}, id=f"options.{key}")
    for key, value in documented(Options)  # type: ignore[arg-type]
]


@pytest.mark.parametrize(("model", "key", "value"), CASES)
async def test_every_documented_field_is_accepted(
    server: Server, store: Path, model: type[Body], key: str, value: Any
) -> None:
    write_fake(store, "thinker", pieces=["<think>", "hm", "</think>", "ok"], template="<think>")
    path, base = ROUTES[model]
    body = base | {key: value}
    if key in CAPABLE and "model" in body:
        body["model"] = CAPABLE[key]
    async with server.client() as client:
        response = await client.post(path, json=body)
    refused = model.model_fields.get(key.rstrip("_")) or model.model_fields.get(f"{key}_")
    if response.status_code == 400 and refused is not None and "refused" in (refused.description or ""):
        return  # documented as refused, and refused by name
    assert response.status_code == 200, (body, response.text)


def test_the_examples_cover_every_model_and_most_fields() -> None:
    assert set(ROUTES) <= set(MODELS)
    for model in ROUTES:
        described = [f for f in model.model_fields.values() if f.description or f.examples]
        assert len(described) >= len(model.model_fields) // 2, model.__name__


READS = re.compile(r"""(?:body|spec|raw)\.get\("(\w+)"|(?:body|spec|raw)\["(\w+)"\]|typed\(body, "(\w+)\"""")
READERS = [
    "app/routes",
    "app/protocol/fields.py",
    "app/protocol/steering.py",
    "app/protocol/openai_request.py",
]


def test_every_field_the_http_layer_reads_is_documented() -> None:
    declared: set[str] = set()
    for model in MODELS:
        declared |= {f.alias or name for name, f in model.model_fields.items()}
        for sub in model.model_json_schema().get("$defs", {}).values():
            declared |= set(sub.get("properties", {}))
    read: dict[str, str] = {}
    for reader in READERS:
        for source in sorted((ROOT / reader).rglob("*.py")) if (ROOT / reader).is_dir() else [ROOT / reader]:
            for match in READS.finditer(source.read_text()):
                read.setdefault(next(g for g in match.groups() if g), source.name)
    assert len(read) > 30  # the scan does find the reads
    undocumented = {key: where for key, where in read.items() if key not in declared}
    assert not undocumented, f"read but not in any request model: {undocumented}"
