"""Choosing a tool-call parser from a model's chat template."""

from __future__ import annotations

from collections.abc import Callable

from validation.tool_calls.base import ToolCallParser
from validation.tool_calls.formats import hermes, llama3, mistral, qwen3_coder

FORMATS: dict[str, Callable[[], ToolCallParser]] = {
    "hermes": hermes,
    "qwen3_coder": qwen3_coder,
    "mistral": mistral,
    "llama3": llama3,
}


def detect_format(template: str | None) -> str | None:
    """The tool-call convention a chat template uses, or ``None`` if it renders no tools."""
    if not template or "tools" not in template:
        return None
    if "<tool_call>" in template:
        return "qwen3_coder" if "<function=" in template else "hermes"
    if "[TOOL_CALLS]" in template:
        return "mistral"
    return "llama3"  # bare JSON, as Ollama falls back to for templates without a call marker


def make_parser(name: str) -> ToolCallParser:
    return FORMATS[name]()
