"""Images a request sends: decoded from base64 or a data URL, and checked before any model sees them.

Every dialect carries images as base64 text: Ollama's ``images`` (bare base64), OpenAI's
``image_url`` and ``input_image`` (a ``data:`` URL; the server fetches nothing, so an ``http(s)``
URL is refused) and Anthropic's ``image`` blocks (``source.type: base64``). :func:`check_image`
reads the picture's header with Pillow, cheaply, without decoding its pixels: a file that is not
an image, or whose decoded size would pass the server's pixel cap, is refused here with a message
saying which; the backend decodes it in full on the worker thread (and a picture broken past its
header fails there, as a 400 too).
"""

from __future__ import annotations

import base64
import binascii
import io
import re
from dataclasses import dataclass

# Decoded pixels (width x height) an image may have: a 40-megapixel photo passes; a decompression
# bomb (a tiny PNG that decodes to gigabytes) does not. TRILLM_MAX_IMAGE_PIXELS changes it.
DEFAULT_MAX_PIXELS = 40_000_000

_DATA_URL = re.compile(r"data:(?P<type>[\w.+/-]*)(?P<params>(;[\w.+-]+=[^;,]*)*);base64,(?P<data>.*)", re.S)


class ImageProblem(ValueError):
    """An image that cannot be used, with a message a person can act on."""


@dataclass(frozen=True)
class CheckedImage:
    """An image's bytes as sent, and what its header says."""

    data: bytes
    format: str
    width: int
    height: int


def from_base64(text: object, where: str) -> bytes:
    """The bytes of a base64 string (standard alphabet, padding optional, whitespace ignored)."""
    if not isinstance(text, str):
        raise ImageProblem(f"{where} must be a base64 string")
    cleaned = "".join(text.split())
    try:
        return base64.b64decode(cleaned + "=" * (-len(cleaned) % 4), validate=True)
    except (binascii.Error, ValueError) as error:
        raise ImageProblem(f"{where} is not valid base64 ({error})") from error


def base64_of_url(url: object, where: str) -> str:
    """The base64 payload of a ``data:[image/...];base64,...`` URL; any other URL is refused."""
    if not isinstance(url, str):
        raise ImageProblem(f"{where} must be a string URL")
    match = _DATA_URL.fullmatch(url.strip())
    if match is None:
        if re.match(r"(?i)https?://", url):
            raise ImageProblem(
                f"{where}: this server does not fetch URLs; send the image inline as a data URL "
                "(data:image/png;base64,...)"
            )
        raise ImageProblem(f"{where} must be a base64 data URL (data:image/png;base64,...)")
    kind = match["type"]
    if kind and not kind.startswith("image/"):
        raise ImageProblem(f"{where}: a data URL of type {kind} is not an image")
    return match["data"]


def images_in(message: dict[str, object]) -> list[bytes]:
    """The checked images a native chat message carries (``fields.messages`` put them there)."""
    images = message.get("images")
    return [image for image in images if isinstance(image, bytes)] if isinstance(images, list) else []


def check_image(data: bytes, where: str, max_pixels: int = DEFAULT_MAX_PIXELS) -> CheckedImage:
    """``data`` if Pillow recognises it as an image within ``max_pixels``; reads the header only."""
    from PIL import Image, UnidentifiedImageError

    if not data:
        raise ImageProblem(f"{where} is empty")
    try:
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
            kind = image.format or "unknown"
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        raise ImageProblem(
            f"{where} is not an image this server can read (PNG, JPEG, WebP, GIF, BMP, TIFF): {error}"
        ) from error
    except Image.DecompressionBombError as error:
        raise ImageProblem(f"{where} is too large to decode: {error}") from error
    if width * height > max_pixels:
        raise ImageProblem(
            f"{where} is {width}x{height} pixels, more than the {max_pixels:,} this server accepts "
            "(TRILLM_MAX_IMAGE_PIXELS); send a smaller image"
        )
    return CheckedImage(data, kind, width, height)


def decode_image(data: bytes, where: str = "image") -> object:
    """The RGB picture (a ``PIL.Image``) of checked image bytes, decoded in full; a file broken
    past its header raises :class:`ImageProblem`."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            return image.convert("RGB")
    except Exception as error:  # Pillow raises many kinds for truncated or corrupt data
        raise ImageProblem(f"{where} could not be decoded: {error}") from error
