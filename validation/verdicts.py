"""Remembered verdicts on what requests send: is this schema valid JSON Schema, can these tools'
call grammar be compiled.

Clients send the same schemas and tools with every request, and checking one the first time costs
milliseconds to hundreds of milliseconds of pure-Python work (``jsonschema``'s meta-schema check of a
large schema, the grammar of 200 tools). Each check is a function of text to a problem (``None`` or
``""``: none), so its verdict can be remembered by that text, and computed in another process: the
caller runs a check there with :func:`recording`, then fills this process's memory with
:func:`remember`, and the work here finds every verdict known. That keeps the interpreter lock free
for the threads that decode (a check on a thread of this process would hold them back).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")
Verdict = str | None
Entry = tuple[str, tuple[str, ...], Verdict]

_recording = threading.local()


class Verdicts:
    """A bounded memory of one check's verdicts, keyed by its text arguments."""

    def __init__(self, name: str, check: Callable[..., Verdict], size: int = 1024) -> None:
        self.name = name
        self._check = check
        self._size = size
        self._known: OrderedDict[tuple[str, ...], Verdict] = OrderedDict()
        self._lock = threading.Lock()
        REGISTRY[name] = self

    def __call__(self, *key: str) -> Verdict:
        with self._lock:
            known = key in self._known
            if known:
                self._known.move_to_end(key)
                verdict = self._known[key]
        if not known:
            verdict = self._check(*key)
            self.put(key, verdict)
        log = getattr(_recording, "entries", None)
        if log is not None:
            log.append((self.name, key, verdict))
        return verdict

    def put(self, key: tuple[str, ...], verdict: Verdict) -> None:
        with self._lock:
            self._known[key] = verdict
            self._known.move_to_end(key)
            while len(self._known) > self._size:
                self._known.popitem(last=False)


REGISTRY: dict[str, Verdicts] = {}


def recording(work: Callable[[], object]) -> list[Entry]:
    """Run ``work`` (its exceptions are its own business) and return every verdict it consulted."""
    entries: list[Entry] = []
    _recording.entries = entries
    try:
        work()
    except Exception:  # the same failure comes back when the caller runs the work itself
        pass
    finally:
        del _recording.entries
    return entries


def remember(entries: list[Entry]) -> None:
    """Take verdicts computed elsewhere (by :func:`recording`) into this process's memory."""
    for name, key, verdict in entries:
        verdicts = REGISTRY.get(name)
        if verdicts is not None:
            verdicts.put(key, verdict)
