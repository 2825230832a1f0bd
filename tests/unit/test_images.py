"""Images as requests carry them: base64, data URLs, the header check and the pixel cap."""

from __future__ import annotations

import pytest

from inference.backends.chat_template import template_message
from tests.support.pictures import b64, data_url, picture, truncated_png
from validation.images import ImageProblem, base64_of_url, check_image, decode_image, from_base64


def test_base64_with_or_without_padding_and_line_breaks() -> None:
    data = picture(5, 7)
    text = b64(data)
    assert from_base64(text, "x") == data
    assert from_base64(text.rstrip("="), "x") == data
    assert from_base64("\n".join(text[i : i + 76] for i in range(0, len(text), 76)), "x") == data


@pytest.mark.parametrize("text", ["not base64!", "@@@@", 42, None])
def test_what_is_not_base64_is_named(text: object) -> None:
    with pytest.raises(ImageProblem, match=r"images\[0\]"):
        from_base64(text, "images[0]")


def test_data_urls() -> None:
    data = picture()
    assert from_base64(base64_of_url(data_url(data), "u"), "u") == data
    assert from_base64(base64_of_url("data:;base64," + b64(data), "u"), "u") == data  # Ollama takes it
    with pytest.raises(ImageProblem, match="does not fetch URLs"):
        base64_of_url("https://example.com/cat.png", "u")
    with pytest.raises(ImageProblem, match="not an image"):
        base64_of_url("data:text/plain;base64,aGk=", "u")
    with pytest.raises(ImageProblem, match="data URL"):
        base64_of_url("file:///etc/passwd", "u")


@pytest.mark.parametrize("kind", ["PNG", "JPEG", "WEBP", "GIF", "BMP"])
def test_common_formats_pass_the_header_check(kind: str) -> None:
    checked = check_image(picture(30, 20, kind=kind), "image")
    assert (checked.width, checked.height, checked.format) == (30, 20, kind)


def test_what_is_not_an_image_is_refused_by_name() -> None:
    with pytest.raises(ImageProblem, match=r"images\[1\] is not an image"):
        check_image(b"%PDF-1.4 hello", "images[1]")
    with pytest.raises(ImageProblem, match="empty"):
        check_image(b"", "images[0]")


def test_the_pixel_cap_counts_decoded_pixels() -> None:
    small_file = picture(400, 300)  # a few kB on the wire, 120,000 pixels decoded
    assert check_image(small_file, "i", max_pixels=120_000).width == 400
    with pytest.raises(ImageProblem, match=r"400x300 pixels, more than the 119,999"):
        check_image(small_file, "i", max_pixels=119_999)


def test_a_picture_broken_past_its_header_fails_when_decoded() -> None:
    broken = truncated_png()
    assert check_image(broken, "image").width == 64  # the header is whole
    with pytest.raises(ImageProblem, match="could not be decoded"):
        decode_image(broken)
    assert decode_image(picture(8, 8)).size == (8, 8)  # type: ignore[attr-defined]


def test_a_message_with_images_becomes_image_parts_for_the_template() -> None:
    message = {"role": "user", "content": "What is it?", "images": [b"a", b"b"]}
    assert template_message(message) == {
        "role": "user",
        "content": [{"type": "image"}, {"type": "image"}, {"type": "text", "text": "What is it?"}],
    }
    assert template_message({"role": "user", "content": "hi"}) == {"role": "user", "content": "hi"}
