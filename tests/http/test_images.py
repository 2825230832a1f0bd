"""Images through every dialect on the fake backend: what reaches the model, the 400s, cancellation.

The fake vision model writes each image into its prompt as ``[image WxH]`` (after decoding it
with Pillow, as a real processor does), so a test reads exactly which images the model saw, in
which order; the real vision model is in tests/models/test_vision.py.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import anthropic
import ollama
import openai
import pytest
import trio

from app.config import Settings
from tests.conftest import Server, running_server, wait_until
from tests.http.test_cancellation import wait_idle
from tests.http.test_cli import trillm
from tests.http.test_cli_habits import ROOT
from tests.http.test_dialects import claude, oai
from tests.support.pictures import b64, data_url, flat, image_block, picture, truncated_png


def seen(server: Server) -> str:
    """The last prompt the fake backend received, as text (its tokens are code points)."""
    return "".join(map(chr, server.fake.prompts[-1]))


async def test_ollama_chat_and_generate_carry_images_to_the_model(server: Server) -> None:
    client = ollama.AsyncClient(host=server.url)
    reply = await client.chat(
        model="fakevision",
        messages=[{"role": "user", "content": "What is this?", "images": [picture(40, 30), picture(8, 9)]}],
    )
    assert reply.message.content == "I see."
    assert seen(server) == "<user>[image 40x30][image 8x9]What is this?<assistant>"
    generated = await client.generate(
        model="fakevision", prompt="Describe", images=[picture(12, 10, kind="JPEG")]
    )
    assert generated.response == "I see." and seen(server) == "<user>[image 12x10]Describe<assistant>"
    shown = await client.show("fakevision")
    assert shown.capabilities is not None and "vision" in shown.capabilities
    assert "vision" not in ((await client.show("fake")).capabilities or [])


async def test_an_image_alone_is_a_prompt(server: Server) -> None:
    """``/api/generate`` with images and no prompt text describes the image (it is not a load)."""
    async with server.client() as http:
        r = await http.post(
            "/api/generate", json={"model": "fakevision", "images": [b64(picture(5, 5))], "stream": False}
        )
    assert r.status_code == 200 and r.json()["response"] == "I see." and r.json()["done_reason"] == "stop"


async def test_openai_image_url_parts_responses_input_image_and_anthropic_image_blocks(
    server: Server,
) -> None:
    api = oai(server)
    chat = await api.chat.completions.create(
        model="fakevision",
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "Compare"},
                    {"type": "image_url", "image_url": {"url": data_url(picture(20, 10))}},
                    {
                        "type": "image_url",
                        "image_url": {"url": data_url(picture(7, 7, kind="JPEG"), "image/jpeg")},
                    },
                ],
            }
        ],
    )
    assert chat.choices[0].message.content == "I see."
    assert seen(server) == "<user>[image 20x10][image 7x7]Compare<assistant>"
    response = await api.responses.create(
        model="fakevision",
        input=[
            {
                "role": "user",
                "content": [
                    {"type": "input_text", "text": "What?"},
                    {"type": "input_image", "image_url": data_url(picture(3, 4)), "detail": "auto"},
                ],
            }
        ],
    )
    assert response.output_text == "I see." and seen(server) == "<user>[image 3x4]What?<assistant>"
    message = await claude(server).messages.create(
        model="fakevision",
        max_tokens=32,
        messages=[
            {
                "role": "user",
                "content": [
                    image_block(picture(6, 2)),
                    {"type": "text", "text": "Look"},
                ],
            }
        ],
    )
    assert message.content[0].type == "text" and message.content[0].text == "I see."
    assert seen(server) == "<user>[image 6x2]Look<assistant>"


async def test_images_for_a_text_only_model_are_a_400_that_says_so(server: Server) -> None:
    with pytest.raises(ollama.ResponseError) as raised:
        await ollama.AsyncClient(host=server.url).chat(
            model="fake", messages=[{"role": "user", "content": "hi", "images": [picture()]}]
        )
    assert raised.value.status_code == 400
    assert raised.value.error == '"fake" does not support images: it is a text-only model'
    with pytest.raises(openai.BadRequestError, match="does not support images"):
        await oai(server).chat.completions.create(
            model="fake",
            messages=[
                {
                    "role": "user",
                    "content": [{"type": "image_url", "image_url": {"url": data_url(picture())}}],
                }
            ],
        )
    with pytest.raises(anthropic.BadRequestError, match="does not support images"):
        await claude(server).messages.create(
            model="fake",
            max_tokens=8,
            messages=[
                {
                    "role": "user",
                    "content": [image_block(picture())],
                }
            ],
        )


@pytest.mark.parametrize(
    ("images", "message"),
    [
        (["not base64 at all!"], "messages[0].images[0] is not valid base64"),
        ([b64(b"GIF89a but not really")], "messages[0].images[0] is not an image this server can read"),
        ([b64(picture()), ""], "messages[0].images[1] is empty"),
        ("abc", "messages[0].images: must be an array"),
        ([b64(flat(3000, 2000))], "3000x2000 pixels, more than the 5,000,000 this server accepts"),
    ],
)
async def test_bad_images_are_400s_naming_the_image(settings: Settings, images: object, message: str) -> None:
    settings.max_image_pixels = 5_000_000
    async with running_server(settings) as server, server.client() as http:
        r = await http.post(
            "/api/chat",
            json={
                "model": "fakevision",
                "stream": False,
                "messages": [{"role": "user", "content": "x", "images": images}],
            },
        )
        assert r.status_code == 400 and message in r.json()["error"], r.text
        ok = await http.post(
            "/api/chat",
            json={"model": "fakevision", "stream": False, "messages": [{"role": "user", "content": "x"}]},
        )
        assert ok.status_code == 200  # the server goes on


async def test_a_picture_broken_past_its_header_is_a_400_from_the_decoder(server: Server) -> None:
    """The header check passes it; decoding it in full, on the worker thread, fails: still a 400,
    streamed or not, and the model goes on serving."""
    body: dict[str, Any] = {
        "model": "fakevision",
        "messages": [{"role": "user", "content": "x", "images": [b64(truncated_png())]}],
    }
    async with server.client() as http:
        r = await http.post("/api/chat", json=body | {"stream": False})
        assert r.status_code == 400 and "could not be decoded" in r.json()["error"], r.text
        r = await http.post("/api/chat", json=body | {"stream": True})
        assert r.status_code == 400 and "could not be decoded" in r.json()["error"], r.text
    assert (await ollama.AsyncClient(host=server.url).chat(model="fakevision", messages=[])).done


async def test_urls_are_not_fetched_and_raw_prompts_take_no_images(server: Server) -> None:
    with pytest.raises(openai.BadRequestError, match="does not fetch URLs") as raised:
        await oai(server).chat.completions.create(
            model="fakevision",
            messages=[
                {
                    "role": "user",
                    "content": [{"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}],
                }
            ],
        )
    assert raised.value.body is not None
    async with server.client() as http:
        r = await http.post(
            "/api/generate",
            json={"model": "fakevision", "prompt": "x", "raw": True, "images": [b64(picture())]},
        )
    assert r.status_code == 400 and "raw mode does not support images" in r.json()["error"]


async def test_a_disconnect_while_the_image_is_encoded_stops_the_work(server: Server) -> None:
    """``slowvision`` takes 0.5 s per image to encode; the client leaves during the second image:
    the sequence is dropped at the next step (no prompt chunk read, no token decoded), and a
    text request on the same model is served while it happens and after."""
    body = {
        "model": "slowvision",
        "stream": True,
        "messages": [{"role": "user", "content": "x", "images": [b64(picture()), b64(picture(seed=1))]}],
    }

    async def leave_early() -> None:
        with trio.move_on_after(0.7):
            async with server.client() as http, http.stream("POST", "/api/chat", json=body) as r:
                async for _ in r.aiter_lines():
                    pass

    async with trio.open_nursery() as nursery:
        nursery.start_soon(leave_early)
        await trio.sleep(0.2)
        async with server.client() as http:
            side = await http.post(
                "/api/chat",
                json={
                    "model": "slowvision",
                    "stream": False,
                    "messages": [{"role": "user", "content": "hi"}],
                },
            )
        assert side.status_code == 200 and side.json()["message"]["content"] == "I see."
    await wait_idle(server)
    history = server.services.engine.history
    await wait_until(lambda: any(r.outcome == "cancelled" for r in history), 5)
    left = [r for r in history if r.outcome == "cancelled"]
    assert len(left) == 1 and left[0].generated_tokens == 0 and left[0].decode_steps == 0
    async with server.client() as http:
        again = await http.post(
            "/api/chat",
            json={
                "model": "slowvision",
                "stream": False,
                "messages": [{"role": "user", "content": "x", "images": [b64(picture())]}],
            },
        )
    assert again.status_code == 200


async def test_openapi_documents_images(server: Server) -> None:
    async with server.client() as http:
        spec = (await http.get("/openapi.json")).json()
    assert "for a vision model" in str(spec)


async def test_trillm_run_attaches_the_images_a_prompt_names(server: Server, tmp_path: Path) -> None:
    """``trillm run VISIONMODEL "describe ./cat.png"`` sends the file as an image, as ``ollama
    run`` does; a text model gets the words as they are."""
    (tmp_path / "cat.png").write_bytes(picture(33, 22))
    (tmp_path / "my dog.jpg").write_bytes(picture(11, 12, kind="JPEG"))
    code, out, _ = await trillm(
        server, "run", "fakevision", f"compare {tmp_path / 'cat.png'} and '{tmp_path / 'my dog.jpg'}'"
    )
    assert code == 0 and out.endswith("I see.\n\n") and "Added image" in out
    assert seen(server) == "<user>[image 33x22][image 11x12]compare and<assistant>"
    code, out, _ = await trillm(server, "run", "fake", f"what is {tmp_path / 'cat.png'}")
    assert code == 0 and seen(server).endswith(f"what is {tmp_path / 'cat.png'}<assistant>")


async def test_the_vision_example_runs(server: Server, tmp_path: Path) -> None:
    """``examples/vision.py`` against the fake vision model: every client gets its answer."""
    (tmp_path / "cat.png").write_bytes(picture(10, 10))
    done = await trio.run_process(
        [sys.executable, str(ROOT / "examples" / "vision.py"), "fakevision", str(tmp_path / "cat.png")],
        capture_stdout=True,
        capture_stderr=True,
        check=False,
        env={**os.environ, "TRILLM_HOST": server.url},
    )
    assert done.returncode == 0, done.stderr.decode()
    assert done.stdout.decode().splitlines() == ["ollama: I see.", "openai: I see.", "anthropic: I see."]
