"""Images made in the test: PNG, JPEG and friends of a given size, and broken ones."""

from __future__ import annotations

import base64
import io


def picture(width: int = 64, height: int = 48, seed: int = 0, kind: str = "PNG") -> bytes:
    """A noisy RGB image (every seed a different one) encoded as ``kind``."""
    import numpy as np
    from PIL import Image

    pixels = (np.random.RandomState(seed).rand(height, width, 3) * 255).astype("uint8")
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format=kind)
    return out.getvalue()


def flat(width: int, height: int) -> bytes:
    """A one-colour PNG: a few hundred bytes on the wire, ``width * height`` pixels decoded."""
    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", (width, height), (200, 30, 30)).save(out, format="PNG")
    return out.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def data_url(data: bytes, kind: str = "image/png") -> str:
    return f"data:{kind};base64,{b64(data)}"


def image_block(data: bytes) -> dict[str, object]:
    """An Anthropic Messages ``image`` block holding ``data`` (a PNG)."""
    return {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": b64(data)}}


def truncated_png() -> bytes:
    """A PNG whose header is whole (size and format read fine) and whose pixel data is cut off."""
    whole = picture(64, 64)
    return whole[: len(whole) // 2]
