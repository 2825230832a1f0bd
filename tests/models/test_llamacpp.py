"""Where GGUF models come from, what happens without llama.cpp, and how its batch shares prompts.

The API behaviours (streaming, options, cancellation, structured output, tools, thinking) are
proved against llama.cpp by the ``both_backends`` modules; here: a GGUF pulled from a Hub repo by
quantisation, an existing Ollama store served read-only under Ollama's names, and the error a user
gets for a GGUF model when the llama.cpp package is missing.
"""

from __future__ import annotations

import hashlib
import json
import sys
from collections.abc import Iterator
from pathlib import Path

import ollama
import pytest

from app.config import Settings
from inference.backends.base import SamplingParams
from inference.backends.llamacpp.backend import LlamaCppBackend, LlamaCppSettings
from inference.engine.batch import Admission
from tests.conftest import Server, running_server
from tests.support.fake_hub import FakeHub, HubRepo, running_hub
from tests.support.pictures import picture

pytestmark = pytest.mark.mlx
HELLO = [{"role": "user", "content": "Say hello"}]
TRAINED_REPLY = "Hello! 你好 🎉 Grüße."


@pytest.fixture(autouse=True)
def needs_llama_cpp(request: pytest.FixtureRequest) -> None:
    if "without_llama_cpp" not in request.fixturenames:
        pytest.importorskip(
            "llama_cpp", reason='llama.cpp backend not installed (pip install -e ".[llamacpp]")'
        )


def add_blob(root: Path, data: bytes) -> dict[str, object]:
    digest = hashlib.sha256(data).hexdigest()
    (root / "blobs").mkdir(parents=True, exist_ok=True)
    (root / "blobs" / f"sha256-{digest}").write_bytes(data)
    return {"digest": f"sha256:{digest}", "size": len(data)}


def add_manifest(
    root: Path, host: str, namespace: str, model: str, tag: str, layers: dict[str, bytes]
) -> Path:
    """An Ollama manifest (and its blobs) as ``ollama pull`` leaves them."""
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "config": {"mediaType": "application/vnd.docker.container.image.v1+json"} | add_blob(root, b"{}"),
        "layers": [
            {"mediaType": f"application/vnd.ollama.image.{kind}"} | add_blob(root, data)
            for kind, data in layers.items()
        ],
    }
    path = root / "manifests" / host / namespace / model / tag
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(manifest))
    return path


@pytest.fixture
def ollama_root(tmp_path: Path, gguf_files: dict[str, Path]) -> Path:
    """A miniature Ollama store: the tiny model under two names, one with a system prompt and
    default options, plus a manifest whose blob is missing (Ollama skips those, and so do we)."""
    root = tmp_path / "ollama"
    weights = gguf_files["tiny"].read_bytes()
    template = b"{{ .Prompt }}"  # Ollama's Go template: not used, the GGUF's Jinja one is
    add_manifest(
        root, "registry.ollama.ai", "library", "tinyllama", "1b", {"model": weights, "template": template}
    )
    params = json.dumps({"temperature": 0, "num_predict": 3}).encode()
    layers = {"model": weights, "system": b"Answer briefly.", "params": params}
    add_manifest(root, "registry.ollama.ai", "someone", "brief", "latest", layers)
    gone = add_manifest(root, "registry.ollama.ai", "library", "gone", "latest", {"model": b"GGUF lost"})
    (root / "blobs" / f"sha256-{hashlib.sha256(b'GGUF lost').hexdigest()}").unlink()
    assert gone.exists()
    return root


def snapshot(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in root.rglob("*")
        if p.is_file()
    }


async def test_an_ollama_store_is_served_under_ollama_names_and_never_modified(
    settings: Settings, ollama_root: Path
) -> None:
    settings.ollama_models = ollama_root
    before = snapshot(ollama_root)
    async with running_server(settings) as server:
        client = ollama.AsyncClient(host=server.url)
        names = {m.model for m in (await client.list()).models}
        assert {"tinyllama:1b", "someone/brief:latest"} <= names
        assert "gone:latest" not in names
        reply = await client.chat("tinyllama:1b", messages=HELLO, options={"temperature": 0})
        assert reply.message.content == TRAINED_REPLY
        shown = await client.show("tinyllama:1b")
        assert shown.modelinfo is not None and shown.modelinfo["general.architecture"] == "qwen2"
        assert shown.details.format == "gguf" and shown.details.quantization_level == "F32"
        # The params layer's options and the system layer apply, as in Ollama.
        brief = await client.chat("someone/brief", messages=HELLO)
        assert brief.eval_count == 3 and brief.done_reason == "length"
        shown = await client.show("someone/brief")
        assert "SYSTEM" in str(shown.modelfile) and "Answer briefly." in str(shown.modelfile)
        assert "num_predict" in str(shown.parameters)
        # Deleting is refused; copying brings the GGUF into trillm's own store.
        async with server.client() as http:
            refused = await http.request("DELETE", "/api/delete", json={"model": "tinyllama:1b"})
            assert refused.status_code == 400 and "ollama rm tinyllama:1b" in refused.json()["error"]
        await client.copy("someone/brief", "mine")
        copied = await client.chat("mine", messages=HELLO)
        assert copied.eval_count == 3  # the defaults came along
        assert "Answer briefly." in str((await client.show("mine")).modelfile)
    assert snapshot(ollama_root) == before


@pytest.fixture
def gguf_hub(
    gguf_files: dict[str, Path], vision_gguf_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[FakeHub]:
    weights = gguf_files["tiny"].read_bytes()
    repo = HubRepo(
        {
            "README.md": b"# tiny in GGUF\n",
            "tiny-Q4_K_M.gguf": b"GGUF not really Q4_K_M",
            "tiny-F32.gguf": weights,
        }
    )
    vision = HubRepo(
        {
            "model-F32.gguf": (vision_gguf_dir / "model.gguf").read_bytes(),
            "mmproj-model-f16.gguf": (vision_gguf_dir / "mmproj-model-f32.gguf").read_bytes(),
            "mmproj-model-q8_0.gguf": b"GGUF not this one",
        }
    )
    fake = FakeHub(repos={"someone/tiny-GGUF": repo, "someone/vision-GGUF": vision})
    with running_hub(fake):
        monkeypatch.setenv("HF_ENDPOINT", fake.url)
        yield fake


async def test_pull_a_gguf_quantisation_from_a_hub_repo(server: Server, gguf_hub: FakeHub) -> None:
    async with server.client() as http:
        pulled = await http.post("/api/pull", json={"model": "hf.co/someone/tiny-GGUF:F32", "stream": False})
        assert pulled.status_code == 200, pulled.text
        # Only the chosen file came down.
        assert gguf_hub.downloads("tiny-F32.gguf") and not gguf_hub.downloads("tiny-Q4_K_M.gguf")
        reply = await http.post(
            "/api/chat",
            json={
                "model": "hf.co/someone/tiny-GGUF:F32",
                "messages": HELLO,
                "stream": False,
                "options": {"temperature": 0},
            },
        )
        assert reply.json()["message"]["content"] == TRAINED_REPLY
        tags = (await http.get("/api/tags")).json()["models"]
        entry = next(m for m in tags if m["name"] == "someone/tiny-GGUF:F32")
        assert entry["details"]["format"] == "gguf"
        missing = await http.post(
            "/api/pull", json={"model": "hf.co/someone/tiny-GGUF:Q2_K", "stream": False}
        )
        assert missing.status_code == 404 and "tiny-F32.gguf" in missing.json()["error"]


async def test_an_ollama_vision_model_reads_images_with_its_projector_layer(
    settings: Settings, tmp_path: Path, vision_gguf_dir: Path
) -> None:
    """A model of an Ollama store with a ``projector`` layer (llava and its kin): served as a
    vision model, the Ollama store left as it was."""
    root = tmp_path / "ollama"
    layers = {
        "model": (vision_gguf_dir / "model.gguf").read_bytes(),
        "projector": (vision_gguf_dir / "mmproj-model-f32.gguf").read_bytes(),
    }
    add_manifest(root, "registry.ollama.ai", "library", "llava", "7b", layers)
    settings.ollama_models = root
    before = snapshot(root)
    async with running_server(settings) as server:
        client = ollama.AsyncClient(host=server.url)
        shown = await client.show("llava:7b")
        assert shown.capabilities is not None and "vision" in shown.capabilities
        options = {"temperature": 0, "num_predict": 4}
        seen = await client.chat(
            model="llava:7b",
            messages=[{"role": "user", "content": "What?", "images": [picture()]}],
            options=options,
        )
        blind = await client.chat(
            model="llava:7b", messages=[{"role": "user", "content": "What?"}], options=options
        )
    assert seen.prompt_eval_count == (blind.prompt_eval_count or 0) + 16
    assert snapshot(root) == before


def test_an_ollama_vision_model_is_served_as_text_where_its_projector_cannot_be_linked(
    tmp_path: Path, vision_gguf_dir: Path
) -> None:
    """Linking the pair needs this store to be writable; where it is not, the model is still
    listed (as a text model) and the listing does not fail."""
    from inference.store.model_store import ModelStore
    from inference.store.ollama_store import OllamaStore

    root = tmp_path / "ollama"
    layers = {
        "model": (vision_gguf_dir / "model.gguf").read_bytes(),
        "projector": (vision_gguf_dir / "mmproj-model-f32.gguf").read_bytes(),
    }
    add_manifest(root, "registry.ollama.ai", "library", "llava", "7b", layers)
    store_root = tmp_path / "store"
    store_root.mkdir()
    (store_root / "snapshots").write_text("not a directory")  # every link under it fails
    (model,) = ModelStore(store_root, [LlamaCppBackend()], OllamaStore(root)).list()
    assert model.name == "llava:7b" and not model.info.vision and model.path.is_file()


async def test_pull_a_gguf_vision_model_brings_its_projector(server: Server, gguf_hub: FakeHub) -> None:
    """A GGUF repo with an ``mmproj`` file: the projector comes down beside the model (the F16
    one of several), and the pulled model reads images."""
    client = ollama.AsyncClient(host=server.url)
    await client.pull("hf.co/someone/vision-GGUF")
    assert gguf_hub.downloads("mmproj-model-f16.gguf") and not gguf_hub.downloads("mmproj-model-q8_0.gguf")
    shown = await client.show("someone/vision-GGUF")
    assert shown.capabilities is not None and "vision" in shown.capabilities
    image = picture(40, 40)
    seen = await client.chat(
        model="someone/vision-GGUF",
        messages=[{"role": "user", "content": "What?", "images": [image]}],
        options={"temperature": 0, "num_predict": 4},
    )
    blind = await client.chat(
        model="someone/vision-GGUF",
        messages=[{"role": "user", "content": "What?"}],
        options={"temperature": 0, "num_predict": 4},
    )
    assert seen.prompt_eval_count == (blind.prompt_eval_count or 0) + 16


@pytest.fixture
def without_llama_cpp(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "llama_cpp", None)  # import llama_cpp now raises ImportError


async def test_without_llama_cpp_gguf_models_are_listed_and_explain_what_to_install(
    settings: Settings, gguf_files: dict[str, Path], without_llama_cpp: None
) -> None:
    (settings.models / "ggufmodel.gguf").symlink_to(gguf_files["tiny"])
    async with running_server(settings) as server, server.client() as http:
        names = [m["name"] for m in (await http.get("/api/tags")).json()["models"]]
        assert "ggufmodel:latest" in names
        response = await http.post(
            "/api/chat", json={"model": "ggufmodel", "messages": HELLO, "stream": False}
        )
        assert response.status_code == 500
        # This checkout is installed in editable mode, so the hint says so.
        assert 'pip install -e ".[llamacpp]"' in response.json()["error"]
        # The MLX models are unaffected.
        fine = await http.post("/api/chat", json={"model": "fake", "messages": HELLO, "stream": False})
        assert fine.status_code == 200


def test_trillm_backend_picks_the_backend_for_a_directory_both_could_serve(
    tmp_path: Path, tiny_dir: Path, gguf_files: dict[str, Path]
) -> None:
    from app.server import default_backends

    both = tmp_path / "both"
    both.mkdir()
    for file in tiny_dir.iterdir():
        (both / file.name).symlink_to(file)
    (both / "tiny.gguf").symlink_to(gguf_files["tiny"])
    for preferred in ("mlx", "llamacpp"):
        backends = default_backends(Settings(backend=preferred))
        assert next(b for b in backends if b.can_load(both)).name == preferred
    assert not LlamaCppBackend().can_load(tiny_dir)


async def test_a_corrupt_gguf_is_a_clear_load_error(settings: Settings, gguf_files: dict[str, Path]) -> None:
    data = gguf_files["tiny"].read_bytes()
    (settings.models / "cut.gguf").write_bytes(data[: len(data) // 2])
    async with running_server(settings) as server, server.client() as http:
        response = await http.post("/api/chat", json={"model": "cut", "messages": HELLO, "stream": False})
        assert response.status_code == 500 and "cut.gguf" in response.json()["error"]
        fine = await http.post("/api/chat", json={"model": "fake", "messages": HELLO, "stream": False})
        assert fine.status_code == 200


def test_concurrent_prompts_with_one_system_prompt_compute_it_once(gguf_files: dict[str, Path]) -> None:
    """Two requests arrive together with one long system prompt: the first computes it, the second
    waits one step and shares those KV cells, and both answer exactly as each does alone."""
    model = LlamaCppBackend(LlamaCppSettings(2048, None, parallel=4)).load(gguf_files["random"])
    system = {"role": "system", "content": "You are a careful assistant who answers briefly. " * 6}
    prompts = [
        model.tokenize(model.render_chat([system, {"role": "user", "content": question}]))
        for question in ("Say hello", "What is two and two?")
    ]
    greedy = SamplingParams(temperature=0)

    def decode(prompts: list[list[int]], tokens: int = 8) -> tuple[list[list[int]], int, int]:
        batch = model.open_batch()  # a fresh batch: an empty cache
        out: list[list[int]] = [[] for _ in prompts]
        for key, prompt in enumerate(prompts):
            assert batch.add(Admission(key, prompt, greedy, lambda: False)) == 0
        while any(len(o) < tokens for o in out):
            for key, step in batch.step():
                assert not isinstance(step, BaseException) and step is not None
                out[key].append(step.token)
                if len(out[key]) == tokens:
                    batch.remove(key)
        return out, batch.prompt_tokens_computed, batch.shared_tokens

    try:
        alone = [decode([prompt])[0][0] for prompt in prompts]
        together, computed, shared = decode(prompts)
    finally:
        model.close()
    common = next(i for i, (a, b) in enumerate(zip(*prompts, strict=False)) if a != b)
    assert common >= 32, "the system prompt is long enough to be worth sharing"
    assert together == alone
    assert shared == common
    assert computed == sum(map(len, prompts)) - common


async def test_a_directory_and_a_gguf_of_one_name_are_two_models_everywhere_alike(
    settings: Settings, gguf_files: dict[str, Path], tiny_dir: Path
) -> None:
    (settings.models / "twin").symlink_to(tiny_dir)
    (settings.models / "twin.gguf").symlink_to(gguf_files["tiny"])
    async with running_server(settings) as server, server.client() as http:
        tags = {m["name"]: m for m in (await http.get("/api/tags")).json()["models"]}
        assert tags["twin:latest"]["details"]["format"] == "safetensors"
        assert tags["twin.gguf:latest"]["details"]["format"] == "gguf"
        for name, kind in (("twin", "safetensors"), ("twin.gguf", "gguf")):
            shown = (await http.post("/api/show", json={"model": name})).json()
            assert shown["details"]["format"] == kind
            reply = await http.post("/api/chat", json={"model": name, "messages": HELLO, "stream": False})
            assert reply.json()["message"]["content"] == TRAINED_REPLY
        loaded = {m["name"]: m["details"]["format"] for m in (await http.get("/api/ps")).json()["models"]}
        assert loaded == {"twin:latest": "safetensors", "twin.gguf:latest": "gguf"}


async def test_removing_a_hand_placed_gguf_asks_first_and_never_errors(
    settings: Settings, gguf_files: dict[str, Path]
) -> None:
    from tests.http.test_cli import trillm

    placed = settings.models / "mine.gguf"
    placed.write_bytes(gguf_files["tiny"].read_bytes())
    async with running_server(settings) as server:
        code, _, err = await trillm(server, "rm", "mine")  # no terminal to answer: not deleted
        assert code == 1 and "--force" in err and placed.exists()
        code, out, err = await trillm(server, "rm", "--force", "mine")
        assert (code, out) == (0, "deleted 'mine'\n"), err
        assert not placed.exists()
        async with server.client() as http:
            gone = await http.request("DELETE", "/api/delete", json={"model": "mine"})
            assert gone.status_code == 404
