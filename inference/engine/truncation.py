"""Shortening a prompt that does not fit the context window, as Ollama does by default.

A chat loses whole turns, oldest first: the system messages and the latest turn (from the last user
message on) are always kept, and a turn (a user message and the assistant and tool messages that
answer it) goes as a unit, so a tool result never outlives the call it answers and no message's
template markup is cut. A single prompt (``/api/generate``, or a context carried over) loses
tokens from its middle instead: the first ``keep`` tokens stay (the template's head), then as many
of the latest tokens as fit.

The functions are pure; the engine calls them on its worker thread with the model's renderer.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

Message = dict[str, object]
Render = Callable[[Sequence[Message]], list[int]]

DEFAULT_REPLY_ROOM = 1024  # tokens left for the reply when num_predict does not say


@dataclass(frozen=True)
class Fitted:
    """A prompt that fits, and what was left out to make it fit."""

    tokens: list[int]
    dropped_messages: int = 0
    dropped_tokens: int = 0


def room_for_reply(window: int, num_predict: int) -> int:
    """How many tokens of the window a shortened prompt leaves for the reply."""
    wanted = num_predict if num_predict > 0 else DEFAULT_REPLY_ROOM
    return max(1, min(wanted, window // 4))


def turns(messages: Sequence[Message]) -> tuple[list[int], list[list[int]], list[int]]:
    """``messages``' indices as (system messages, earlier turns oldest first, the latest turn)."""
    users = [i for i, m in enumerate(messages) if m.get("role") == "user"]
    last = users[-1] if users else max(len(messages) - 1, 0)
    system = [i for i in range(last) if messages[i].get("role") == "system"]
    earlier: list[list[int]] = []
    for i in range(last):
        if messages[i].get("role") == "system":
            continue
        if messages[i].get("role") == "user" or not earlier:
            earlier.append([])
        earlier[-1].append(i)
    latest = list(range(last, len(messages)))
    return system, earlier, latest


def fit_chat(messages: Sequence[Message], render: Render, limit: int) -> Fitted | None:
    """The fewest oldest turns dropped so that the rendered prompt holds at most ``limit`` tokens;
    ``None`` when even the system messages and the latest turn alone are too long."""
    system, earlier, latest = turns(messages)

    def rendered(dropped: int) -> list[int]:
        kept = sorted([*system, *(i for turn in earlier[dropped:] for i in turn), *latest])
        return render([messages[i] for i in kept])

    # Fewer dropped turns means a longer prompt: search for the smallest count that fits.
    low, high = 0, len(earlier)
    best = rendered(high)
    if len(best) > limit:
        return None
    while low < high:
        middle = (low + high) // 2
        tokens = rendered(middle)
        if len(tokens) <= limit:
            high, best = middle, tokens
        else:
            low = middle + 1
    return Fitted(best, dropped_messages=sum(len(turn) for turn in earlier[:high]))


def fit_tokens(tokens: Sequence[int], limit: int, keep: int) -> Fitted:
    """The first ``keep`` tokens and the latest ones, ``limit`` in all."""
    if len(tokens) <= limit:
        return Fitted(list(tokens))
    keep = max(0, min(keep, limit // 2))
    tail = limit - keep
    kept = [*tokens[:keep], *tokens[len(tokens) - tail :]]
    return Fitted(kept, dropped_tokens=len(tokens) - len(kept))
