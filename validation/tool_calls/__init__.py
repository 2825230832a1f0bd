"""Tool-call extraction: one incremental parser per output convention, chosen from the template.

Every parser has ``feed(text) -> Parsed`` and ``finish() -> Parsed``; it is pure (no I/O), so it
behaves the same over a stream and over a whole reply, wherever the token boundaries fall.
"""

from validation.tool_calls.base import Parsed, ToolCall, ToolCallParser
from validation.tool_calls.registry import FORMATS, detect_format, make_parser

__all__ = ["FORMATS", "Parsed", "ToolCall", "ToolCallParser", "detect_format", "make_parser"]
