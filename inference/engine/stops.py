"""Incremental stop-string matching that never releases text belonging to a stop string.

Text arrives piece by piece (one decoded token at a time). A stop string may span several pieces,
so any tail of the text seen so far that could still become a stop string is held back until the
next piece decides it.
"""

from __future__ import annotations

from collections.abc import Sequence


class StopMatcher:
    """Feed text with :meth:`feed`; it returns what is safe to release and whether a stop hit."""

    def __init__(self, stops: Sequence[str]) -> None:
        self._stops = [s for s in stops if s]
        self._held = ""
        self.matched: str | None = None  # the stop string that ended the text, once one has

    def feed(self, text: str) -> tuple[str, bool]:
        """Add ``text``; return (releasable text, stopped). After a stop, discard the rest."""
        if not self._stops:
            return text, False
        buffer = self._held + text
        found = [(i, n, s) for n, s in enumerate(self._stops) if (i := buffer.find(s)) >= 0]
        if found:
            cut, _, self.matched = min(found)
            self._held = ""
            return buffer[:cut], True
        keep = self._partial_tail(buffer)
        self._held = buffer[len(buffer) - keep :]
        return buffer[: len(buffer) - keep], False

    def flush(self) -> str:
        """Release whatever is held back (the generation ended without completing a stop)."""
        held, self._held = self._held, ""
        return held

    def _partial_tail(self, buffer: str) -> int:
        """Length of the longest suffix of ``buffer`` that is a proper prefix of a stop string."""
        best = 0
        for stop in self._stops:
            for n in range(min(len(stop) - 1, len(buffer)), best, -1):
                if buffer.endswith(stop[:n]):
                    best = n
                    break
        return best
