"""Real vision models through the ``ollama``, ``openai`` and ``anthropic`` clients, against the
backend's own library computing the same prompt: on MLX a tiny Qwen2-VL (random weights, in the
layout mlx-vlm loads), on llama.cpp a GGUF with a LLaVA-style projector (``mmproj``) beside it, read
by libmtmd. The tests marked ``both_backends`` run on each.

Random weights decide a greedy reply as surely as trained ones: the tests check that the image
reaches the model (the prompt grows by the image's tokens and the reply changes), that identical
requests give identical replies alone and beside other requests, that the server's tokens are
mlx-vlm's own, and that everything else (streaming, formats, cancellation) holds with images.
"""

from __future__ import annotations

import json
from typing import Any

import jsonschema
import ollama
import pytest
import trio

from app.config import Settings
from tests.conftest import running_server, wait_until
from tests.http.test_dialects import claude, oai
from tests.support.pictures import b64, data_url, image_block, picture, truncated_png

pytestmark = pytest.mark.mlx

GREEDY = {"temperature": 0, "num_predict": 12}


@pytest.fixture
def vision_settings(settings: Settings, vision_dir: object) -> Settings:
    return settings  # the store links "vision" (the backend's kind) when a test asks for vision_dir


def ask(images: list[bytes], text: str = "What is in the picture?") -> dict[str, Any]:
    return {"role": "user", "content": text, "images": images}


@pytest.mark.both_backends
async def test_the_image_reaches_the_model(vision_settings: Settings, backend_kind: str) -> None:
    async with running_server(vision_settings) as server:
        client = ollama.AsyncClient(host=server.url)
        without = await client.chat(model="vision", messages=[ask([])], options=GREEDY)
        with_png = await client.chat(model="vision", messages=[ask([picture(64, 48)])], options=GREEDY)
        again = await client.chat(model="vision", messages=[ask([picture(64, 48)])], options=GREEDY)
        jpeg = await client.chat(
            model="vision", messages=[ask([picture(300, 200, kind="JPEG")])], options=GREEDY
        )
        shown = await client.show("vision")
    assert shown.capabilities is not None and "vision" in shown.capabilities
    assert with_png.prompt_eval_count and without.prompt_eval_count and jpeg.prompt_eval_count
    if backend_kind == "mlx":
        # 64x48 becomes a 2x2 grid of merged patches once resized to multiples of 28: 4 image
        # tokens, with the vision start and end tokens around them; a larger picture, more.
        assert with_png.prompt_eval_count == without.prompt_eval_count + 4 + 2
        assert jpeg.prompt_eval_count > with_png.prompt_eval_count
    else:  # the LLaVA encoder reads every picture at 56x56: 16 patches, 16 tokens
        assert with_png.prompt_eval_count == without.prompt_eval_count + 16 == jpeg.prompt_eval_count
    assert with_png.message.content != without.message.content
    assert again.message.content == with_png.message.content  # identical requests, identical replies
    assert jpeg.message.content != with_png.message.content


async def served(settings: Settings, image: bytes) -> tuple[list[int], int]:
    """The context (prompt and reply tokens) and reply length of a greedy ``/api/generate``."""
    body = {"model": "vision", "prompt": "Describe it.", "images": [b64(image)], "stream": False}
    async with running_server(settings) as server, server.client() as http:
        r = await http.post("/api/generate", json=body | {"options": GREEDY})
    assert r.status_code == 200, r.text
    return r.json()["context"], r.json()["eval_count"]


async def test_the_server_computes_what_mlx_vlm_computes(vision_settings: Settings, vision_dir: Any) -> None:
    """The prompt's tokens (with the image's placeholders expanded) and the greedy reply are the
    ones mlx-vlm's own processor and ``generate_step`` give for the same conversation."""
    import mlx.core as mx
    from mlx_vlm.generate.ar import generate_step
    from mlx_vlm.utils import load

    image = picture(120, 90, seed=3)
    context, generated = await served(vision_settings, image)

    from validation.images import decode_image

    model, processor = load(str(vision_dir))
    content = [{"type": "image"}, {"type": "text", "text": "Describe it."}]
    prompt = processor.tokenizer.apply_chat_template(
        [{"role": "user", "content": content}], add_generation_prompt=True, tokenize=False
    )
    inputs = processor(text=[prompt], images=[decode_image(image)])
    ids = inputs["input_ids"]
    extra = {k: v for k, v in inputs.items() if k not in ("input_ids", "attention_mask", "pixel_values")}
    steps = generate_step(mx.array(ids), model, inputs["pixel_values"], None, temperature=0.0, **extra)
    tokens = [int(token) for (token, _), _ in zip(steps, range(generated), strict=False)]
    assert context == [*ids.tolist()[0], *tokens]


@pytest.mark.parametrize("backend_kind", ["llamacpp"], indirect=True)
async def test_the_server_computes_what_libmtmd_computes(
    vision_settings: Settings, vision_gguf_dir: Any, backend_kind: str
) -> None:
    """On llama.cpp: the greedy reply is the one llama-cpp-python's own context gives after
    libmtmd evaluates the same prompt's chunks (the text, the image, the text after it)."""
    import ctypes

    import llama_cpp
    import numpy as np

    image = picture(120, 90, seed=3)
    context, generated = await served(vision_settings, image)

    from inference.backends.chat_template import render
    from inference.backends.llamacpp.vision import Projector, with_markers

    llama = llama_cpp.Llama(model_path=str(vision_gguf_dir / "model.gguf"), n_ctx=512, verbose=False)
    projector = Projector(vision_gguf_dir / "mmproj-model-f32.gguf", llama.model, None)
    from inference.store.gguf_file import read_header

    template = read_header(vision_gguf_dir / "model.gguf").metadata["tokenizer.chat_template"]
    prompt = render(
        str(template), [with_markers({"role": "user", "content": "Describe it.", "images": [image]})]
    )
    tokens, chunks = projector.tokenize(prompt, [image], add_special=False)
    for i in range(len(chunks.spans)):
        projector.eval_chunk(llama.ctx, chunks, i, 0, 512, logits=i == len(chunks.spans) - 1)
    reply = []
    for _ in range(generated):
        logits = np.ctypeslib.as_array(
            llama_cpp.llama_get_logits_ith(llama.ctx, -1), shape=(llama.n_vocab(),)
        )
        token = int(np.argmax(logits))
        reply.append(token)
        batch = llama_cpp.llama_batch_get_one((ctypes.c_int32 * 1)(token), 1)
        assert llama_cpp.llama_decode(llama.ctx, batch) == 0
    chunks.close()
    projector.close()
    llama.close()
    assert context == [*tokens, *reply]


@pytest.mark.both_backends
async def test_openai_image_url_streaming_and_responses_input_image(vision_settings: Settings) -> None:
    image = picture(90, 60, seed=5)
    native = {"model": "vision", "messages": [ask([image], "Name it.")], "options": GREEDY}
    async with running_server(vision_settings) as server:
        expected = (await ollama.AsyncClient(host=server.url).chat(**native)).message.content
        api = oai(server)
        parts = [
            {"type": "text", "text": "Name it."},
            {"type": "image_url", "image_url": {"url": data_url(image)}},
        ]
        streamed = await api.chat.completions.create(
            model="vision",
            messages=[{"role": "user", "content": parts}],  # type: ignore[misc,list-item]
            temperature=0,
            max_tokens=12,
            stream=True,
        )
        text = "".join([chunk.choices[0].delta.content or "" async for chunk in streamed if chunk.choices])
        response = await api.responses.create(
            model="vision",
            input=[
                {
                    "role": "user",
                    "content": [
                        {"type": "input_text", "text": "Name it."},
                        {"type": "input_image", "image_url": data_url(image), "detail": "auto"},
                    ],
                }
            ],
            temperature=0,
            max_output_tokens=12,
        )
        message = await claude(server).messages.create(
            model="vision",
            max_tokens=12,
            messages=[
                {
                    "role": "user",
                    "content": [
                        image_block(image),
                        {"type": "text", "text": "Name it."},
                    ],
                }
            ],
            extra_body={"temperature": 0},
        )
    assert text == expected
    assert response.output_text == expected
    assert message.content[0].type == "text" and message.content[0].text == expected


@pytest.mark.both_backends
async def test_structured_output_with_an_image(vision_settings: Settings) -> None:
    schema = {
        "type": "object",
        "properties": {"color": {"enum": ["red", "green", "blue"]}, "bright": {"type": "boolean"}},
        "required": ["color", "bright"],
        "additionalProperties": False,
    }
    async with running_server(vision_settings) as server:
        reply = await ollama.AsyncClient(host=server.url).chat(
            model="vision",
            messages=[ask([picture(50, 50, seed=2)], "What colour, how many?")],
            format=schema,
            options={"temperature": 0, "num_predict": 64},
        )
    jsonschema.validate(json.loads(reply.message.content), schema)


async def test_a_forced_tool_call_about_an_image(vision_settings: Settings) -> None:
    """Tools work beside an image as without one: a required call is one valid call."""
    tool = {
        "type": "function",
        "function": {
            "name": "tag_picture",
            "description": "Tag the picture",
            "parameters": {
                "type": "object",
                "properties": {"label": {"enum": ["cat", "dog", "car"]}, "outdoor": {"type": "boolean"}},
                "required": ["label", "outdoor"],
            },
        },
    }
    parts = [
        {"type": "text", "text": "Tag it."},
        {"type": "image_url", "image_url": {"url": data_url(picture())}},
    ]
    async with running_server(vision_settings) as server:
        reply = await oai(server).chat.completions.create(
            model="vision",
            messages=[{"role": "user", "content": parts}],  # type: ignore[misc,list-item]
            tools=[tool],  # type: ignore[list-item]
            tool_choice="required",
            parallel_tool_calls=False,  # one call, then the grammar ends the reply
            temperature=0,
            max_tokens=256,  # the tiny vocabulary spells JSON nearly a character a token
        )
    (call,) = reply.choices[0].message.tool_calls or []
    assert call.function.name == "tag_picture"  # type: ignore[union-attr]
    arguments = json.loads(call.function.arguments)  # type: ignore[union-attr]
    jsonschema.validate(arguments, tool["function"]["parameters"])  # type: ignore[index]


@pytest.mark.both_backends
async def test_image_and_text_requests_batch_together_unchanged(vision_settings: Settings) -> None:
    """An image request, a text request on the same vision model and one on a text model, at once:
    each reply is the one it gets alone."""
    requests = [
        {
            "model": "vision",
            "messages": [ask([picture(80, 80, seed=7)])],
            "options": GREEDY | {"num_predict": 20},
        },
        {
            "model": "vision",
            "messages": [ask([], "Tell me a story")],
            "options": GREEDY | {"num_predict": 30},
        },
        {"model": "vision", "messages": [ask([picture(40, 90, seed=8)], "And this?")], "options": GREEDY},
        {"model": "random", "messages": [{"role": "user", "content": "Say hello"}], "options": GREEDY},
    ]
    async with running_server(vision_settings) as server:
        client = ollama.AsyncClient(host=server.url)
        alone = [(await client.chat(**r)).message.content for r in requests]
        together: list[str] = [""] * len(requests)

        async def one(i: int) -> None:
            together[i] = (await client.chat(**requests[i])).message.content or ""

        async with trio.open_nursery() as nursery:
            for i in range(len(requests)):
                nursery.start_soon(one, i)
    assert together == alone


@pytest.mark.both_backends
async def test_a_broken_picture_is_a_400_and_the_model_goes_on(vision_settings: Settings) -> None:
    async with running_server(vision_settings) as server:
        client = ollama.AsyncClient(host=server.url)
        with pytest.raises(ollama.ResponseError, match="could not be decoded") as raised:
            await client.chat(model="vision", messages=[ask([truncated_png()])])
        assert raised.value.status_code == 400
        assert (await client.chat(model="vision", messages=[ask([picture()])], options=GREEDY)).done


async def test_a_disconnect_while_images_are_encoded_stops_the_work(vision_settings: Settings) -> None:
    """Eight large images take the vision tower a while; the client leaves as soon as the job runs:
    the sequence ends at the next step, before any token, and the model serves the next request."""
    images = [b64(picture(448, 448, seed=s)) for s in range(8)]
    body = {
        "model": "vision",
        "stream": True,
        "messages": [{"role": "user", "content": "x", "images": images}],
    }
    async with running_server(vision_settings) as server:
        engine = server.services.engine
        async with server.client() as http:  # load the model first: the next job starts at once
            assert (await http.post("/api/chat", json={"model": "vision", "messages": []})).status_code == 200
        before = len(engine.history)

        async def send() -> None:
            async with server.client() as http, http.stream("POST", "/api/chat", json=body) as r:
                async for _ in r.aiter_lines():
                    pass

        async with trio.open_nursery() as nursery:  # (the reply's headers wait for its first event)
            nursery.start_soon(send)
            await wait_until(lambda: engine.statistics().active == 1, 30)
            nursery.cancel_scope.cancel()
        await wait_until(lambda: len(engine.history) > before, 30)
        (report,) = list(engine.history)[before:]
        async with server.client() as http:
            after = await http.post(
                "/api/chat", json={"model": "vision", "stream": False, "messages": [ask([])]}
            )
    assert report.outcome == "cancelled" and report.generated_tokens == 0 and report.decode_steps == 0
    assert report.checks_after_cancel <= 1
    assert after.status_code == 200 and after.json()["done"]


@pytest.mark.both_backends
async def test_images_for_a_text_model_are_refused(vision_settings: Settings) -> None:
    async with running_server(vision_settings) as server:
        with pytest.raises(ollama.ResponseError, match='"random" does not support images') as raised:
            await ollama.AsyncClient(host=server.url).chat(model="random", messages=[ask([picture()])])
    assert raised.value.status_code == 400


def test_a_template_that_places_no_image_is_a_clear_error(vision_dir: Any) -> None:
    """Images with a prompt that holds no image placeholder (a template that ignores image
    parts) are refused before any work, not left to fail inside the model."""
    from inference.backends.mlx.backend import MlxBackend
    from validation.images import ImageProblem

    model = MlxBackend().load(vision_dir)
    with pytest.raises(ImageProblem, match="placed none of the images"):
        model.tokenize_with_images("<|im_start|>user\nhi<|im_end|>\n", [picture()])
    tokens, media = model.tokenize_with_images(model.render_chat([ask([picture()])]), [picture()])
    assert len(tokens) > 6 and isinstance(media, dict) and "pixel_values" in media
    model.close()
