"""Model management over HTTP: pull from a (local, fake) Hub, create, copy, delete, blobs, residency."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import ollama
import pytest

from app.config import Settings
from tests.conftest import Server, running_server, wait_until
from tests.support.fake_hub import FakeHub, HubRepo, running_hub

REPO = "mlx-community/tiny-chat"


@pytest.fixture
def hub(tiny_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeHub]:
    fake = FakeHub(repos={REPO: HubRepo.from_directory(tiny_dir)})
    fake.repos["someone/readme-only"] = HubRepo({"README.md": b"# nothing to run here\n"})
    fake.repos["someone/gguf-only"] = HubRepo({"model-Q4_K_M.gguf": b"GGUF" + b"\0" * 64})
    with running_hub(fake):
        monkeypatch.setenv("HF_ENDPOINT", fake.url)
        yield fake


async def pull_lines(client: httpx.AsyncClient, name: str) -> list[dict[str, object]]:
    async with client.stream("POST", "/api/pull", json={"model": name}) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("application/x-ndjson")
        return [json.loads(line) async for line in response.aiter_lines()]


def tree(root: Path) -> list[str]:
    return sorted(str(p) for p in root.rglob("*"))


def weights_size(model: Path) -> int:
    return sum(f.stat().st_size for f in model.glob("*.safetensors"))


def blobs(store: Path) -> set[str]:
    return {p.name for p in (store / "blobs").iterdir()} if (store / "blobs").is_dir() else set()


@pytest.mark.mlx
async def test_pull_streams_progress_then_the_model_answers(server: Server, hub: FakeHub) -> None:
    async with server.client() as client:
        lines = await pull_lines(client, f"hf.co/{REPO}")
        statuses = [line["status"] for line in lines]
        assert statuses[0] == "pulling manifest"
        assert statuses[-3:] == ["verifying sha256 digest", "writing manifest", "success"]
        weights = hashlib.sha256(hub.repos[REPO].files["model.safetensors"]).hexdigest()
        progress = [line for line in lines if line.get("digest") == f"sha256:{weights}"]
        assert progress[0]["status"] == f"pulling {weights[:12]}"
        assert (
            progress[-1]["completed"]
            == progress[-1]["total"]
            == len(hub.repos[REPO].files["model.safetensors"])
        )
        listed = {m["name"] for m in (await client.get("/api/tags")).json()["models"]}
        assert f"{REPO}:latest" in listed
        reply = await client.post(
            "/api/chat",
            json={"model": REPO, "messages": [{"role": "user", "content": "hello"}], "stream": False},
        )
        assert reply.status_code == 200 and reply.json()["done"] is True
        # A second pull finds the weights in the store and does not download them again.
        await pull_lines(client, REPO)
        assert len(hub.downloads("model.safetensors")) == 1
    # The official client drives the same route.
    client = ollama.AsyncClient(host=server.url)
    parts = [part async for part in await client.pull(REPO, stream=True)]
    assert parts[-1].status == "success"
    assert (await client.pull(REPO)).status == "success"


@pytest.fixture
def small_chunks(monkeypatch: pytest.MonkeyPatch) -> int:
    """huggingface_hub writes in 10 MB chunks; the tiny model needs smaller ones to be cut mid-file."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "DOWNLOAD_CHUNK_SIZE", 16 * 1024)
    return 16 * 1024


def resumed_at(header: str | None) -> int:
    assert header is not None and header.startswith("bytes=") and header.endswith("-"), header
    return int(header[6:-1])


@pytest.mark.mlx
async def test_a_dropped_connection_resumes_with_a_range_request(
    server: Server, hub: FakeHub, small_chunks: int
) -> None:
    size = len(hub.repos[REPO].files["model.safetensors"])
    hub.drop_after["model.safetensors"] = size // 2
    async with server.client() as client:
        response = await client.post("/api/pull", json={"model": REPO, "stream": False})
        assert response.status_code == 200, response.text
        assert response.json() == {"status": "success"}
    first, second = hub.downloads("model.safetensors")
    assert first is None and 0 < resumed_at(second) <= size // 2


@pytest.mark.mlx
async def test_an_interrupted_pull_resumes_where_it_stopped(
    server: Server, hub: FakeHub, small_chunks: int, store: Path
) -> None:
    size = len(hub.repos[REPO].files["model.safetensors"])
    hub.drop_after["model.safetensors"] = size // 2
    hub.fail_next.add("model.safetensors")  # the in-pull retry fails too: the pull gives up
    async with server.client() as client:
        failed = await client.post("/api/pull", json={"model": REPO, "stream": False})
        assert failed.status_code == 502 and "pull again to resume" in failed.json()["error"]
        assert (await client.post("/api/show", json={"model": REPO})).status_code == 404
        again = await client.post("/api/pull", json={"model": REPO, "stream": False})
        assert again.status_code == 200, again.text
    assert 0 < resumed_at(hub.downloads("model.safetensors")[-1]) <= size // 2
    assert not any((store / "partial").glob("*--*"))  # the staging area is cleaned up


@pytest.mark.mlx
async def test_a_corrupted_file_is_detected_and_nothing_is_registered(
    server: Server, hub: FakeHub, store: Path
) -> None:
    hub.corrupt.add("model.safetensors")
    async with server.client() as client:
        lines = await pull_lines(client, REPO)
        assert "corrupt" in str(lines[-1]["error"]) and "digest mismatch" in str(lines[-1]["error"])
        assert all(line.get("status") != "success" for line in lines)
        response = await client.post("/api/pull", json={"model": REPO, "stream": False})
        assert response.status_code == 502 and "digest mismatch" in response.json()["error"]
        listed = {m["name"] for m in (await client.get("/api/tags")).json()["models"]}
        assert f"{REPO}:latest" not in listed
        assert not (store / "manifests").exists()
        # Once the Hub serves the right bytes, the same pull succeeds.
        hub.corrupt.clear()
        assert (await client.post("/api/pull", json={"model": REPO, "stream": False})).status_code == 200


async def test_pull_errors_are_clear(server: Server, hub: FakeHub, monkeypatch: pytest.MonkeyPatch) -> None:
    async with server.client() as client:
        lines = await pull_lines(client, "nobody/nothing")
        assert lines[0] == {"status": "pulling manifest"}
        assert "file does not exist" in str(lines[-1]["error"])
        missing = await client.post("/api/pull", json={"model": "nobody/nothing", "stream": False})
        assert missing.status_code == 404
        for repo, status, words in (
            ("someone/readme-only", 400, "not an MLX or GGUF model"),
            (
                "someone/gguf-only:Q8_0",
                404,
                "no GGUF file of quantisation 'Q8_0'; its GGUF files: model-Q4_K_M",
            ),
        ):
            response = await client.post("/api/pull", json={"model": repo, "stream": False})
            assert response.status_code == status and words in response.json()["error"]
        response = await client.post("/api/pull", json={"model": "llama3", "stream": False})
        assert response.status_code == 400 and "Hugging Face repo id" in response.json()["error"]
        monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
        offline = await client.post("/api/pull", json={"model": REPO, "stream": False})
        assert offline.status_code == 502 and "cannot reach" in offline.json()["error"]
        assert (await client.get("/")).status_code == 200


@pytest.mark.mlx
async def test_a_full_disk_is_reported_before_downloading(
    server: Server, hub: FakeHub, monkeypatch: pytest.MonkeyPatch
) -> None:
    import shutil
    from collections import namedtuple

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10**6, 10**6 - 1000, 1000))
    async with server.client() as client:
        response = await client.post("/api/pull", json={"model": REPO, "stream": False})
    assert response.status_code == 507 and "not enough disk space" in response.json()["error"]
    assert hub.downloads("model.safetensors") == []


async def test_create_from_a_model_with_overrides(server: Server) -> None:
    body = {
        "model": "team/pirate:v1",
        "from": "fake",
        "system": "You are a pirate.",
        "parameters": {"num_predict": 2, "stop": ["!"]},
        "messages": [{"role": "user", "content": "ahoy"}, {"role": "assistant", "content": "arr"}],
        "template": "[T]{{ messages }}[/T]",
    }
    async with server.client() as client:
        async with client.stream("POST", "/api/create", json=body) as response:
            lines = [json.loads(line) async for line in response.aiter_lines()]
        assert lines[0] == {"status": "reading model metadata"}
        assert lines[-2:] == [{"status": "writing manifest"}, {"status": "success"}]
        shown = (await client.post("/api/show", json={"model": "TEAM/Pirate:V1"})).json()
        assert shown["system"] == "You are a pirate."
        assert shown["template"] == "[T]{{ messages }}[/T]"
        assert "num_predict" in shown["parameters"] and '"!"' in shown["parameters"]
        assert shown["details"]["parent_model"] == "fake:latest"
        assert "FROM fake:latest" in shown["modelfile"] and 'SYSTEM "You are a pirate."' in shown["modelfile"]
        reply = await client.post(
            "/api/chat",
            json={
                "model": "team/pirate:v1",
                "messages": [{"role": "user", "content": "hi"}],
                "stream": False,
            },
        )
        assert reply.json()["message"]["content"] == "Hello,"
        assert reply.json()["eval_count"] == 2
        prompt = "".join(chr(t) for t in server.fake.prompts[-1])
        assert prompt == "[T]<system>You are a pirate.<user>ahoy<assistant>arr<user>hi[/T]"
        # The request's own options and system prompt win over the model's.
        reply = await client.post(
            "/api/chat",
            json={
                "model": "team/pirate:v1",
                "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}],
                "options": {"num_predict": 3},
                "stream": False,
            },
        )
        assert reply.json()["eval_count"] == 3
        assert "pirate" not in "".join(chr(t) for t in server.fake.prompts[-1])
        # Parameters are checked like request options.
        bad = await client.post(
            "/api/create", json={"model": "x", "from": "fake", "parameters": {"top_k": "many"}}
        )
        assert bad.status_code == 400 and "top_k" in bad.json()["error"]
        neither = await client.post("/api/create", json={"model": "x"})
        assert (
            neither.status_code == 400
            and neither.json()["error"] == "neither 'from' or 'files' was specified"
        )


async def test_copy_and_delete_share_and_then_free_the_files(server: Server, store: Path) -> None:
    async with server.client() as client:
        assert (
            await client.post("/api/create", json={"model": "base", "from": "fake", "stream": False})
        ).json() == {"status": "success"}
        files = blobs(store)
        copied = await client.post("/api/copy", json={"source": "base", "destination": "team/copy:v2"})
        assert copied.status_code == 200 and copied.content == b""
        assert blobs(store) == files  # a copy costs no disk
        names = {m["name"] for m in (await client.get("/api/tags")).json()["models"]}
        assert {"base:latest", "team/copy:v2"} <= names
        chat = {"model": "team/copy:v2", "messages": [{"role": "user", "content": "x"}], "stream": False}
        assert (await client.post("/api/chat", json=chat)).status_code == 200
        assert (await client.request("DELETE", "/api/delete", json={"model": "base"})).status_code == 200
        assert blobs(store) == files  # still used by the copy
        assert (await client.post("/api/chat", json=chat)).status_code == 200
        assert (
            await client.request("DELETE", "/api/delete", json={"model": "team/copy:v2"})
        ).status_code == 200
        assert blobs(store) == set()
        assert not any((store / "snapshots").iterdir())
        gone = await client.request("DELETE", "/api/delete", json={"model": "base"})
        assert gone.status_code == 404 and gone.json()["error"] == "model 'base' not found"
        missing = await client.post("/api/copy", json={"source": "nope", "destination": "x"})
        assert missing.status_code == 404 and missing.json()["error"] == 'model "nope" not found'
        # A plain directory in the store can be copied (imported) and deleted too.
        assert (
            await client.post("/api/copy", json={"source": "slow", "destination": "slow2"})
        ).status_code == 200
        assert (await client.request("DELETE", "/api/delete", json={"model": "slow"})).status_code == 200
        assert (
            not (store / "slow").exists()
            and (await client.post("/api/show", json={"model": "slow2"})).is_success
        )


async def test_blobs_then_create_from_files(server: Server) -> None:
    data = json.dumps({"pieces": ["from", " blobs"]}).encode()
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    async with server.client() as client:
        assert (await client.head(f"/api/blobs/{digest}")).status_code == 404
        wrong = await client.post("/api/blobs/sha256:" + "0" * 64, content=data)
        assert wrong.status_code == 400 and "digest mismatch" in wrong.json()["error"]
        assert (await client.post(f"/api/blobs/{digest}", content=data)).status_code == 201
        assert (await client.post(f"/api/blobs/{digest}", content=data)).status_code == 200
        assert (await client.head(f"/api/blobs/{digest}")).status_code == 200
        assert (await client.head("/api/blobs/sha256:xyz")).status_code == 400
        created = await client.post(
            "/api/create", json={"model": "uploaded", "files": {"fake.json": digest}, "stream": False}
        )
        assert created.status_code == 200, created.text
        reply = await client.post("/api/generate", json={"model": "uploaded", "prompt": "x", "stream": False})
        assert reply.json()["response"] == "from blobs"
        absent = await client.post(
            "/api/create", json={"model": "u2", "files": {"fake.json": "sha256:" + "1" * 64}, "stream": False}
        )
        assert absent.status_code == 404 and "not found" in absent.json()["error"]


HOSTILE = [
    "../outside",
    "..",
    "a/../../outside",
    "/etc/passwd",
    "/tmp/x",
    "a\\..\\b",
    "name\0null",
    "%2e%2e/outside",
    "..%2fx",
    "a/b/c/d",
    "x" * 81,
    "ns/" + "y" * 81,
    "model:" + "t" * 81,
    "model:../x",
    ".hidden",
    "name\n",
    "sp ace",
    "~/x",
]


async def test_hostile_names_never_touch_the_file_system(server: Server, store: Path, tmp_path: Path) -> None:
    sentinel = tmp_path / "outside"
    sentinel.write_text("keep me")
    before = tree(store)
    async with server.client() as client:
        for name in HOSTILE:
            for method, path, body in (
                ("POST", "/api/pull", {"model": name, "stream": False}),
                ("POST", "/api/create", {"model": name, "from": "fake", "stream": False}),
                ("POST", "/api/create", {"model": "ok", "from": name, "stream": False}),
                ("POST", "/api/copy", {"source": "fake", "destination": name}),
                ("POST", "/api/copy", {"source": name, "destination": "ok"}),
                ("DELETE", "/api/delete", {"model": name}),
                ("POST", "/api/show", {"model": name}),
            ):
                response = await client.request(method, path, json=body)
                assert response.status_code in (400, 404), (name, path, response.text)
                assert "error" in response.json()
            hostile_files = {name: "sha256:" + "0" * 64}
            response = await client.post("/api/create", json={"model": "ok", "files": hostile_files})
            assert response.status_code in (400, 404)
    assert sentinel.read_text() == "keep me"
    assert tree(store) == before


async def test_least_recently_used_model_is_unloaded_beyond_the_limit(settings: Settings) -> None:
    settings.max_loaded_models = 2
    async with running_server(settings) as server:
        async with server.client() as client:
            for name in ("fake", "fakejson", "fake", "slow"):
                body = {"model": name, "prompt": "x", "stream": False, "options": {"num_predict": 1}}
                assert (await client.post("/api/generate", json=body)).status_code == 200
            models = (await client.get("/api/ps")).json()["models"]
            assert sorted(m["name"] for m in models) == ["fake:latest", "slow:latest"]
            for model in models:
                assert {
                    "expires_at",
                    "size",
                    "size_vram",
                    "context_length",
                    "digest",
                    "details",
                } <= model.keys()
                assert model["size"] > 0 and model["context_length"] == min(settings.context_length, 4096)
            forever = await client.post("/api/generate", json={"model": "fake", "keep_alive": -1})
            assert forever.json()["done_reason"] == "load"
            ps = {m["name"]: m for m in (await client.get("/api/ps")).json()["models"]}
            assert ps["fake:latest"]["expires_at"] > "2200"
            await client.post("/api/generate", json={"model": "slow", "keep_alive": "50ms"})
            await wait_until(lambda: server.services.engine.statistics().loaded == 1)


@pytest.mark.mlx
async def test_unloading_gives_the_weights_memory_back(server: Server, tiny_dir: Path) -> None:
    import mlx.core as mx

    weights = weights_size(tiny_dir)
    async with server.client() as client:
        before = mx.get_active_memory()
        assert (await client.post("/api/generate", json={"model": "tiny"})).json()["done_reason"] == "load"
        loaded = mx.get_active_memory()
        assert loaded - before >= weights * 0.9
        unloaded = await client.post("/api/generate", json={"model": "tiny", "keep_alive": 0})
        assert unloaded.json()["done_reason"] == "unload"
        assert mx.get_active_memory() - before < weights * 0.1


async def test_the_official_client_manages_models(server: Server) -> None:
    client = ollama.AsyncClient(host=server.url)
    created = await client.create(model="pirate", from_="fake", system="Arr.", parameters={"num_predict": 1})
    assert created.status == "success"
    assert (await client.copy("pirate", "crew/pirate:v2")).status == "success"
    shown = await client.show("crew/pirate:v2")
    assert (
        "Arr." in (shown.modelfile or "")
        and shown.details is not None
        and shown.details.parent_model == "fake:latest"
    )
    reply = await client.chat(model="crew/pirate:v2", messages=[{"role": "user", "content": "x"}])
    assert reply.message.content == "Hello"
    assert (await client.delete("pirate")).status == "success"
    assert {m.model for m in (await client.list()).models} >= {"crew/pirate:v2"}
    with pytest.raises(ollama.ResponseError) as error:
        await client.delete("pirate")
    assert error.value.status_code == 404
