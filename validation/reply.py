"""A reply split into what clients get separately: reasoning, answer text and tool calls.

:class:`ReplyParser` chains the thinking splitter and a tool-call parser; both are incremental, so
this is too. It is pure and knows nothing of tokens or requests.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from validation.thinking import ThinkingParser
from validation.tool_calls import Parsed, ToolCall, ToolCallParser, make_parser


@dataclass
class ReplyDelta:
    thinking: str = ""
    content: str = ""
    calls: list[ToolCall] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.thinking or self.content or self.calls or self.errors)


class ReplyParser:
    """``split_thinking``: the model may reason in ``<think>`` blocks (``inside``: the prompt
    opened one); ``keep_thinking``: return that reasoning (``think`` not false); ``tool_format``:
    the convention calls follow, or ``None`` when the request declared no tools."""

    def __init__(
        self,
        *,
        split_thinking: bool = False,
        inside: bool = False,
        keep_thinking: bool = True,
        tool_format: str | None = None,
    ) -> None:
        self._thinking = ThinkingParser(inside=inside) if split_thinking else None
        self._keep = keep_thinking
        self._tools: ToolCallParser | None = make_parser(tool_format) if tool_format else None
        # Everything written outside reasoning, call markers and all, and the reasoning itself:
        # what a failed reply reports, since a call that did not parse never reaches ``calls``.
        self.written: list[str] = []
        self.reasoning: list[str] = []

    def feed(self, text: str) -> ReplyDelta:
        if self._thinking is None:
            return self._answer("", text, final=False)
        thinking, content = self._thinking.feed(text)
        return self._answer(thinking, content, final=False)

    def finish(self) -> ReplyDelta:
        thinking, content = self._thinking.finish() if self._thinking is not None else ("", "")
        return self._answer(thinking, content, final=True)

    def _answer(self, thinking: str, content: str, *, final: bool) -> ReplyDelta:
        if content:
            self.written.append(content)
        if thinking:
            self.reasoning.append(thinking)
        delta = ReplyDelta(thinking=thinking if self._keep else "")
        if self._tools is None:
            delta.content = content
            return delta
        parsed = Parsed()
        if content:
            parsed.extend(self._tools.feed(content))
        if final:
            parsed.extend(self._tools.finish())
        delta.content, delta.calls, delta.errors = parsed.content, parsed.calls, parsed.errors
        return delta
