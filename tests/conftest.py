"""Shared fixtures: a model store with tiny real and fake models, and the real server on port 0.

The MLX model is built once per session by ``tests/support/tiny_model.py`` (trained for a few hundred
steps to memorise scripted replies) and loaded through the same code path a user's model takes.
``tests/support/tiny_gguf.py`` writes the same models as GGUF files for llama.cpp.

A test module marked ``both_backends`` runs each test twice: once with the store's real models
(``tiny``, ``random``, ``jsonrandom``, ``agent``, ``jsontools``) in the MLX layout, once as GGUF files served by
llama.cpp under the same names.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import trio
from quart_trio import QuartTrio

from app.config import Settings
from app.server import create_app, default_backends, serve
from app.services import Services
from inference.backends.fake import FakeBackend
from inference.backends.mlx import blas_shim as mlx_blas
from inference.backends.mlx.backend import release_mlx_streams
from tests.support import tiny_embedding, tiny_gguf, tiny_model, tiny_vision

REAL_MODELS = ("tiny", "random", "jsonrandom", "agent", "jsontools")


def pytest_configure(config: pytest.Config) -> None:
    """Route MLX's matrix products to OpenBLAS as ``trillm serve`` does, before MLX is imported."""
    mlx_blas.install()


def pytest_unconfigure(config: pytest.Config) -> None:
    """The fixtures train models with MLX on this thread: free its streams before exit."""
    release_mlx_streams()


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if metafunc.definition.get_closest_marker("both_backends") and "backend_kind" in metafunc.fixturenames:
        metafunc.parametrize("backend_kind", ["mlx", "llamacpp"], indirect=True)


@pytest.fixture
def backend_kind(request: pytest.FixtureRequest) -> str:
    """Which backend serves the store's real models: ``mlx`` unless a test is parametrised."""
    kind = str(getattr(request, "param", "mlx"))
    if kind == "llamacpp":
        pytest.importorskip(
            "llama_cpp", reason='llama.cpp backend not installed (pip install -e ".[llamacpp]")'
        )
    return kind


def write_fake(store: Path, name: str, **script: object) -> Path:
    path = store / name
    path.mkdir(parents=True, exist_ok=True)
    (path / "fake.json").write_text(json.dumps(script))
    return path


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny Qwen2 model trained on :data:`tiny_model.SCRIPT` (built once per session)."""
    return tiny_model.build_model(tmp_path_factory.mktemp("models") / "tiny", train_steps=300)


@pytest.fixture(scope="session")
def random_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained tiny model: it rambles and almost never ends on its own."""
    return tiny_model.build_model(tmp_path_factory.mktemp("models") / "random", seed=1)


@pytest.fixture(scope="session")
def json_random_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Untrained, with a 4,000-token vocabulary trained on English and JSON, padded to 4,096 ids."""
    out = tmp_path_factory.mktemp("models") / "jsonrandom"
    return tiny_model.build_model(out, vocab_size=4000, corpus_lines=20000, pad_vocab_to=128, seed=2)


@pytest.fixture(scope="session")
def json_tools_dir(tmp_path_factory: pytest.TempPathFactory, json_random_dir: Path) -> Path:
    """``jsonrandom`` with a tool-calling template: it never chose to call anything."""
    out = tmp_path_factory.mktemp("models") / "jsontools"
    return tiny_model.with_template(json_random_dir, out, tiny_model.TOOLS_TEMPLATE)


@pytest.fixture(scope="session")
def agent_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Tool and thinking support, trained on :data:`tiny_model.AGENT_SCRIPT` (about a minute)."""
    return tiny_model.build_agent_model(tmp_path_factory.mktemp("models") / "agent")


@pytest.fixture(scope="session")
def gguf_files(
    tmp_path_factory: pytest.TempPathFactory,
    tiny_dir: Path,
    random_dir: Path,
    json_random_dir: Path,
    agent_dir: Path,
    json_tools_dir: Path,
) -> dict[str, Path]:
    """The real models as GGUF files (written once per session, in seconds)."""
    out = tmp_path_factory.mktemp("gguf")
    dirs = (tiny_dir, random_dir, json_random_dir, agent_dir, json_tools_dir)
    sources = dict(zip(REAL_MODELS, dirs, strict=True))
    return {name: tiny_gguf.write_gguf(source, out / f"{name}.gguf") for name, source in sources.items()}


@pytest.fixture(scope="session")
def embedding_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Tiny embedding models (random weights, seconds to build): a mean-pooled BERT in the
    sentence-transformers layout, a last-token-pooled Qwen3 in the Qwen3-Embedding layout, and
    that one's GGUF copy."""
    out = tmp_path_factory.mktemp("embedding")
    encoder = tiny_embedding.build_encoder(out / "minilm")
    decoder = tiny_embedding.build_decoder(out / "qwen3embed")
    return {
        "minilm": encoder,
        "qwen3embed": decoder,
        "qwen3embed.gguf": tiny_gguf.write_gguf(decoder, out / "q.gguf"),
    }


@pytest.fixture(scope="session")
def vision_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny Qwen2-VL (random weights, seconds to build) in the layout mlx-vlm loads."""
    return tiny_vision.build_qwen2_vl(tmp_path_factory.mktemp("vision") / "qwen2vl")


@pytest.fixture(scope="session")
def vision_gguf_dir(tmp_path_factory: pytest.TempPathFactory, random_dir: Path) -> Path:
    """A GGUF vision model as Hugging Face GGUF repos ship one: a language model's GGUF (the
    random model, made to heed its whole prompt) and a LLaVA-style projector (``mmproj``) in one
    directory."""
    out = tmp_path_factory.mktemp("vision-gguf")
    text = tiny_vision.louder_text_model(random_dir, out / "text")
    (out / "model").mkdir()
    tiny_gguf.write_gguf(text, out / "model" / "model.gguf")
    tiny_gguf.write_projector(out / "model" / "mmproj-model-f32.gguf", text_width=64)
    return out / "model"


REAL_MODEL_FIXTURES = frozenset(
    {
        "vision_dir",
        "vision_gguf_dir",
        "tiny_dir",
        "random_dir",
        "json_random_dir",
        "json_tools_dir",
        "agent_dir",
        "gguf_files",
        "embedding_dirs",
    }
)


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A test that asks for a real model is in the ``mlx`` tier, marked or not (before ``-m``)."""
    for item in items:
        if REAL_MODEL_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.mlx)


@pytest.fixture
def store(tmp_path: Path, backend_kind: str, request: pytest.FixtureRequest) -> Path:
    """The fake models, plus the real ones for a test marked ``mlx`` (built only then)."""
    root = tmp_path / "store"
    root.mkdir()
    if not request.node.get_closest_marker("mlx"):
        pass
    elif backend_kind == "llamacpp":
        for name, file in request.getfixturevalue("gguf_files").items():
            (root / f"{name}.gguf").symlink_to(file)
        (root / "qwen3embed.gguf").symlink_to(request.getfixturevalue("embedding_dirs")["qwen3embed.gguf"])
        if "vision_dir" in request.fixturenames:
            (root / "vision").symlink_to(request.getfixturevalue("vision_gguf_dir"))
    else:
        fixtures = ("tiny_dir", "random_dir", "json_random_dir", "agent_dir", "json_tools_dir")
        for name, fixture in zip(REAL_MODELS, fixtures, strict=True):
            (root / name).symlink_to(request.getfixturevalue(fixture))
        for name in ("minilm", "qwen3embed"):
            (root / name).symlink_to(request.getfixturevalue("embedding_dirs")[name])
        if "vision_dir" in request.fixturenames:
            (root / "vision").symlink_to(request.getfixturevalue("vision_dir"))
    write_fake(root, "fake", pieces=["Hello", ",", " world", "!"])
    write_fake(root, "fakejson", pieces=['{"a"', ":", "1", ',"b":', '"x"', "}"])
    tools = "{% if tools %}<tool_call>{% endif %}"
    call = [
        "Sure. <tool",
        '_call>{"name": "get_weather", ',
        '"arguments": {"city": "Rome"}}</tool_call>',
        " Done.",
    ]
    write_fake(root, "faketools", pieces=call, template=tools)
    bad = ['<tool_call>{"name": "launch_rockets", "arguments": {}}</tool_call>']
    write_fake(root, "badtools", pieces=bad, template=tools)
    write_fake(root, "fakeembed", pooling="mean")
    write_fake(root, "fakevision", pieces=["I", " see", "."], vision=True)
    write_fake(root, "slowvision", pieces=["I", " see", "."], vision=True, encode_delay=0.5)
    write_fake(root, "shortembed", pooling="mean", context_length=16)
    write_fake(root, "slowembed", pooling="mean", embed_delay=0.05)
    write_fake(root, "slow", pieces=["tick "], loop=True, delay=0.02)
    write_fake(root, "prefill", pieces=["x"], loop=True, delay=0.02, prefill_delay=0.01)
    write_fake(root, "failing", pieces=["a", "b", "c", "d"], loop=True, fail_at=3)
    write_fake(root, "unloadable", load_error="weights are corrupt")
    broken = root / "broken"
    broken.mkdir()
    (broken / "config.json").write_text(
        json.dumps({"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2"})
    )
    (broken / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}......")
    return root


async def wait_until(predicate: Callable[[], object], seconds: float = 5.0) -> None:
    """Poll ``predicate`` until true; engine state changes on a worker thread, not via an event."""
    with trio.fail_after(seconds):
        while not predicate():  # noqa: ASYNC110
            await trio.sleep(0.005)


@dataclass
class Server:
    url: str
    services: Services
    fake: FakeBackend
    app: QuartTrio

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.url, timeout=60)


async def start_server(nursery: trio.Nursery, settings: Settings) -> tuple[Server, trio.Event]:
    fake = FakeBackend()
    app = create_app(settings, backends=[fake, *default_backends(settings)])
    stop = trio.Event()
    urls = await nursery.start(
        lambda task_status: serve(app, settings, shutdown_trigger=stop.wait, task_status=task_status)
    )
    url = urls[0].replace("0.0.0.0", "127.0.0.1")
    return Server(url=url, services=app.extensions["trillm"], fake=fake, app=app), stop


@pytest.fixture
def settings(store: Path) -> Settings:
    # A short grace: Hypercorn 0.18 holds an idle keep-alive connection (a client left open) for
    # the whole grace at shutdown, which would add seconds to every test.
    return Settings(host="127.0.0.1", port=0, models=store, shutdown_grace=1.0)


@asynccontextmanager
async def running_server(settings: Settings) -> AsyncIterator[Server]:
    """A server for ``settings``, shut down (gracefully) when the block ends."""
    async with trio.open_nursery() as nursery:
        running, stop = await start_server(nursery, settings)
        yield running
        stop.set()


@pytest.fixture
async def server(settings: Settings) -> AsyncIterator[Server]:
    async with running_server(settings) as running:
        yield running
