"""The OpenAPI document: true to the routes the app serves, and schemathesis finds no server error."""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from app.config import Settings
from tests.conftest import Server, running_server, write_fake
from tests.support.fake_hub import FakeHub, running_hub

IGNORED = {"HEAD", "OPTIONS"}
# CI fuzzes 200 examples per operation; a newcomer's loop 15 (TRILLM_SCHEMATHESIS_EXAMPLES overrides).
EXAMPLES = os.environ.get("TRILLM_SCHEMATHESIS_EXAMPLES", "200" if os.environ.get("CI") else "15")
SCHEMATHESIS = [
    *("--checks", "no_unplanned_server_error,errors_are_json"),
    *("--mode", "all", "--max-examples", EXAMPLES),
    *("--generation-deterministic", "--phases", "examples,coverage,fuzzing"),
    *("--request-timeout", "20", "--no-color"),
]


def served_routes(server: Server) -> set[tuple[str, str]]:
    out = set()
    for rule in server.app.url_map.iter_rules():
        if rule.rule.startswith("/static"):
            continue
        path = re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule.rule).replace("{name}", "{model}")
        out |= {(path, m) for m in set(rule.methods or ()) - IGNORED}
    return out


async def test_the_document_names_exactly_the_served_routes(server: Server) -> None:
    async with server.client() as client:
        spec = (await client.get("/openapi.json")).json()
    documented = {
        (path, m.upper()) for path, item in spec["paths"].items() for m in item if m != "parameters"
    }
    documented -= {(p, m) for p, m in documented if m in IGNORED}
    assert documented == served_routes(server)


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeHub]:
    with running_hub(FakeHub()) as fake:  # every repo is missing: pulls answer 404, never reach out
        monkeypatch.setenv("HF_ENDPOINT", fake.url)
        yield fake


async def test_schemathesis_finds_no_server_error(tmp_path: Path, hub: FakeHub) -> None:
    store = tmp_path / "store"
    write_fake(store, "fake", pieces=["Hello", ",", " world", "!"])
    write_fake(store, "fakejson", pieces=['{"a"', ":", "1", "}"])
    write_fake(store, "fakeembed", pooling="mean")  # the embedding routes' example model
    settings = Settings(host="127.0.0.1", port=0, models=store)
    async with running_server(settings) as server:
        command = [sys.executable, "-m", "schemathesis.cli", "run", f"{server.url}/openapi.json"]
        done = await trio.run_process(
            [*command, *SCHEMATHESIS],
            capture_stdout=True,
            capture_stderr=True,
            check=False,
            env={
                **os.environ,
                "SCHEMATHESIS_HOOKS": "tests.support.schemathesis_hooks",
                "PYTHONPATH": str(Path.cwd()),
            },
        )
    output = done.stdout.decode() + done.stderr.decode()
    assert done.returncode == 0, output[-6000:]
