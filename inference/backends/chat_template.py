"""Chat messages as Hugging Face (Jinja) chat templates expect them, and rendering without a tokenizer.

Ollama's message shape differs from the one templates were written for (``thinking`` vs
``reasoning_content``, tool calls without ``type``, ``tool_name`` vs ``name``, ``images`` vs image
content parts); both backends pass
messages through :func:`template_message`. The MLX backend renders with its tokenizer's
``apply_chat_template``; :func:`render` does the same from a template string (a GGUF's), with the
same Jinja environment, so a conversation becomes the same prompt on either backend.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from validation.images import images_in


def template_message(message: dict[str, object]) -> dict[str, object]:
    """An Ollama message in the shape Hugging Face chat templates expect."""
    out = {k: v for k, v in message.items() if k != "images"}
    if images := images_in(message):
        # Vision templates read content parts: an image part where each image's tokens go.
        text = out.get("content") or ""
        out["content"] = [*({"type": "image"} for _ in images), {"type": "text", "text": text}]
    if "thinking" in out:
        out["reasoning_content"] = out.pop("thinking")
    calls = out.get("tool_calls")
    if isinstance(calls, list):
        out["tool_calls"] = [{"type": "function", **c} if isinstance(c, dict) else c for c in calls]
    if out.get("role") == "tool" and "tool_name" in out:
        out.setdefault("name", out["tool_name"])
    return out


def render(
    template: str,
    messages: Sequence[dict[str, object]],
    *,
    tools: Sequence[dict[str, object]] = (),
    think: bool | None = None,
    special: dict[str, str] | None = None,
) -> str:
    """``messages`` through ``template``, ending with the assistant cue; ``special`` holds the
    ``bos_token`` / ``eos_token`` strings templates refer to."""
    from transformers.utils.chat_template_utils import render_jinja_template

    extra: dict[str, Any] = dict(special or {})
    if think is not None:
        extra["enable_thinking"] = think
    rendered: Any = render_jinja_template(
        [[template_message(m) for m in messages]],
        tools=list(tools) or None,
        chat_template=template,
        add_generation_prompt=True,
        **extra,
    )
    return str(rendered[0][0])  # (one text per conversation, generation indices)
