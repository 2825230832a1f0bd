"""Splitting a reasoning trace from the answer: ``<think>…</think>``, incrementally.

:class:`ThinkingParser` is pure: ``feed(text)`` returns ``(thinking, content)`` that can be released
now, ``finish()`` the rest. Marker halves split across tokens are held until decided. When the
prompt already opened the block (templates that end the generation cue with ``<think>``), start
with ``inside=True``.
"""

from __future__ import annotations

from enum import Enum

from validation.markers import split_at

OPEN, CLOSE = "<think>", "</think>"


class State(Enum):
    START = "start"  # nothing seen yet: a reply may open with <think> (after whitespace)
    THINKING = "thinking"  # inside the block: text is reasoning
    ANSWER = "answer"  # after the block (or no block): text is content


class ThinkingParser:
    def __init__(self, *, inside: bool = False) -> None:
        self.state = State.THINKING if inside else State.START
        self._held = ""
        self._thought = False
        self._answer_started = False

    def feed(self, text: str) -> tuple[str, str]:
        """Add ``text``; return (thinking, content) that can be released now."""
        buffer = self._held + text
        self._held = ""
        thinking = content = ""
        while buffer:
            if self.state is State.START:
                stripped = buffer.lstrip()
                if stripped.startswith(OPEN):
                    self.state, buffer = State.THINKING, stripped[len(OPEN) :]
                elif OPEN.startswith(stripped):
                    self._held = buffer
                    return thinking, content
                else:
                    self.state = State.ANSWER
            elif self.state is State.THINKING:
                if not self._thought:
                    buffer = buffer.lstrip()  # the newline after <think>
                    if not buffer:
                        return thinking, content
                    self._thought = True
                before, after, found = split_at(buffer, CLOSE)
                if not found:
                    # Trailing whitespace waits: it is dropped if </think> comes next.
                    text = before.rstrip()
                    thinking += text
                    self._held = before[len(text) :] + after
                    return thinking, content
                thinking += before.rstrip()
                self.state, buffer = State.ANSWER, after
            else:
                if not self._answer_started:
                    buffer = buffer.lstrip("\n")  # the blank line templates put after </think>
                    if not buffer:
                        return thinking, content
                    self._answer_started = True
                content += buffer
                buffer = ""
        return thinking, content

    def finish(self) -> tuple[str, str]:
        """Release what is held: an unfinished block stays thinking, anything else is content."""
        held, self._held = self._held, ""
        if self.state is State.THINKING:
            return held.strip() if not self._thought else held.rstrip(), ""
        return "", held if self._answer_started or self.state is State.ANSWER else held.strip()

    @property
    def answering(self) -> bool:
        """The answer has started (the constraint for ``format`` may apply from here)."""
        return self.state is State.ANSWER
