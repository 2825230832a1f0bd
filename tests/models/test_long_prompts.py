"""Long prompts on real models, as Ollama answers them: shortened by default, ``truncate: false``
refused, ``num_ctx`` above the default honoured, and Open WebUI's default request shape answered.

Each test runs on MLX and on llama.cpp (the same tiny models, as GGUF files).
"""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

import ollama
import pytest

from app.config import Settings
from tests.conftest import Server, running_server
from tests.support import tiny_gguf
from tests.support.tiny_model import SCRIPT

pytestmark = [pytest.mark.mlx, pytest.mark.both_backends]

GREEDY = {"temperature": 0, "num_predict": 8}
SYSTEM = {"role": "system", "content": "You are a helpful assistant."}
HELLO = SCRIPT[0][0]


def old_turns(count: int) -> list[dict[str, Any]]:
    return [
        message
        for i in range(count)
        for message in (
            {"role": "user", "content": f"tell me about the number {i} " * 6},
            {"role": "assistant", "content": f"the number {i} is a number " * 6},
        )
    ]


async def test_an_over_long_chat_keeps_the_system_message_and_the_latest_turn(server: Server) -> None:
    client = ollama.AsyncClient(host=server.url)
    latest = {"role": "user", "content": HELLO}
    options = GREEDY | {"num_ctx": 256}
    alone = await client.chat(model="tiny", messages=[SYSTEM, latest], options=options)
    long = [SYSTEM, *old_turns(40), latest]  # thousands of tokens against a 256-token window
    shortened = await client.chat(model="tiny", messages=long, options=options)
    assert shortened.done and shortened.prompt_eval_count is not None
    # Some of the newest earlier turns fit beside the kept ones; the prompt read stays in the window.
    assert alone.prompt_eval_count is not None
    assert alone.prompt_eval_count <= shortened.prompt_eval_count <= 256 - 8
    # Only the oldest turns went: with every earlier turn dropped, the prompt is exactly the
    # system message and the latest turn.
    huge = [SYSTEM, {"role": "user", "content": "word " * 2000}, {"role": "assistant", "content": "ok"}]
    dropped_all = await client.chat(model="tiny", messages=[*huge, latest], options=options)
    assert dropped_all.prompt_eval_count == alone.prompt_eval_count
    assert dropped_all.message.content == alone.message.content

    # The official client has no truncate argument yet: the same request by hand.
    async with server.client() as http:
        body = {"model": "tiny", "messages": long, "options": options, "stream": False, "truncate": False}
        refused = await http.post("/api/chat", json=body)
    assert refused.status_code == 400 and "num_ctx 256" in refused.json()["error"]


async def test_an_over_long_generate_prompt_keeps_its_end(server: Server) -> None:
    async with server.client() as http:
        reply = await http.post(
            "/api/generate",
            json={
                "model": "tiny",
                "prompt": "word " * 2000,
                "stream": False,
                "options": GREEDY | {"num_ctx": 256},
            },
        )
        assert reply.status_code == 200, reply.text
        assert reply.json()["prompt_eval_count"] <= 256 - 8


async def test_num_ctx_above_the_default_is_honoured(settings: Settings, backend_kind: str) -> None:
    async with running_server(replace(settings, context_length=128)) as server, server.client() as http:
        prompt = "tell me about the number seven " * 40  # a few hundred tokens
        body = {"model": "tiny", "prompt": prompt, "stream": False, "truncate": False, "options": GREEDY}
        refused = await http.post("/api/generate", json=body)
        assert refused.status_code == 400 and "128" in refused.json()["error"]
        body["options"] = GREEDY | {"num_ctx": 1024}
        whole = await http.post("/api/generate", json=body)
        assert whole.status_code == 200, whole.text
        assert whole.json()["prompt_eval_count"] > 128
        shown = (await ollama.AsyncClient(host=server.url).ps()).models
        # llama.cpp loaded its context again, larger; MLX's cache grows per request.
        assert [m.context_length for m in shown] == [1024 if backend_kind == "llamacpp" else 128]


# Open WebUI 0.12's default chat: its built-in tools (web search, knowledge, notes, memory, ...)
# sent with every message.
OPEN_WEBUI_TOOLS = (
    "search_web fetch_url get_current_timestamp calculate_timestamp query_knowledge_files "
    "query_knowledge_bases view_knowledge_file list_knowledge_bases search_notes view_note "
    "write_note replace_note_content search_chats view_chat add_memory search_memories "
    "replace_memory_content delete_memory list_memories generate_image edit_image "
    "execute_code search_channels view_channel search_channel_messages view_channel_message "
    "get_user_info list_models get_model_info search_prompts view_prompt list_tools view_tool "
    "list_files view_file get_weather_forecast"
).split()


def open_webui_tool(name: str) -> dict[str, Any]:
    words = name.replace("_", " ")
    return {
        "type": "function",
        "function": {
            "name": name,
            "description": (
                f"Use this tool to {words}. It returns the result as JSON that you can cite in your "
                "answer; call it only when the user's request needs it and pass every argument the "
                "user gave you, in the user's own words where possible. " * 2
            ),
            "parameters": {
                "type": "object",
                "properties": {
                    "query": {"type": "string", "description": f"What to {words} for, in plain words."},
                    "count": {"type": "integer", "description": "How many results to return (1 to 10)."},
                    "scope": {
                        "type": "string",
                        "enum": ["all", "recent", "mine"],
                        "description": "Which items to search: all, recent ones, or the user's own.",
                    },
                    "details": {
                        "type": "boolean",
                        "description": "Whether to include each item's full text.",
                    },
                },
                "required": ["query"],
            },
        },
    }


@pytest.fixture
def long_context_model(store: Path, backend_kind: str, json_tools_dir: Path, tmp_path: Path) -> str:
    """``jsontools`` (a tool template and an English vocabulary) trained for a 32k window."""
    model = tmp_path / "webui"
    shutil.copytree(json_tools_dir, model)
    config = json.loads((model / "config.json").read_text())
    (model / "config.json").write_text(json.dumps(config | {"max_position_embeddings": 32768}))
    if backend_kind == "llamacpp":
        tiny_gguf.write_gguf(model, store / "webui.gguf")
    else:
        (store / "webui").symlink_to(model)
    return "webui"


async def test_open_webui_default_tools_fit_and_the_answer_streams(
    long_context_model: str, server: Server
) -> None:
    tools = [open_webui_tool(name) for name in OPEN_WEBUI_TOOLS]
    assert len(tools) == 36 and len(json.dumps(tools)) > 25_000
    client = ollama.AsyncClient(host=server.url)
    parts = []
    async for part in await client.chat(
        model=long_context_model,
        messages=[SYSTEM, {"role": "user", "content": "What can you do?"}],
        tools=tools,
        options={"temperature": 0, "num_predict": 6},
        stream=True,
    ):
        parts.append(part)
    assert parts[-1].done and parts[-1].prompt_eval_count is not None
    assert parts[-1].prompt_eval_count > 4096  # beyond the old default window: nothing was dropped
