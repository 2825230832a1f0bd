"""Shortening over-long prompts: which turns go, which stay, and where a single prompt is cut."""

from __future__ import annotations

from collections.abc import Sequence

from inference.engine.truncation import fit_chat, fit_tokens, room_for_reply, turns

Message = dict[str, object]


def render(messages: Sequence[Message]) -> list[int]:
    """One token per character, with two tokens of markup per message."""
    return [0 for m in messages for _ in f"<>{m['content']}"]


def chat(*pairs: tuple[str, str]) -> list[Message]:
    return [{"role": role, "content": content} for role, content in pairs]


def test_turns_keep_system_messages_and_group_answers_with_their_question() -> None:
    messages = chat(
        ("system", "s"),
        ("user", "q1"),
        ("assistant", "call"),
        ("tool", "result"),
        ("assistant", "a1"),
        ("user", "q2"),
        ("assistant", "a2"),
        ("user", "q3"),
    )
    system, earlier, latest = turns(messages)
    assert system == [0]
    assert earlier == [[1, 2, 3, 4], [5, 6]]
    assert latest == [7]


def test_the_oldest_turns_go_first_and_only_as_many_as_needed() -> None:
    messages = chat(("system", "S" * 10), ("user", "a" * 30), ("assistant", "b" * 30))
    messages += chat(("user", "c" * 30), ("assistant", "d" * 30), ("user", "now"))
    full = len(render(messages))
    fitted = fit_chat(messages, render, full - 1)
    assert fitted is not None and fitted.dropped_messages == 2  # the first question and answer
    fitted = fit_chat(messages, render, 20)
    assert fitted is not None and fitted.dropped_messages == 4
    assert len(fitted.tokens) == len(render(chat(("system", "S" * 10), ("user", "now"))))


def test_a_chat_whose_latest_turn_alone_is_too_long_does_not_fit() -> None:
    messages = chat(("system", "s"), ("user", "old"), ("user", "x" * 100))
    assert fit_chat(messages, render, 50) is None


def test_a_single_prompt_keeps_its_head_and_its_latest_tokens() -> None:
    tokens = list(range(100))
    fitted = fit_tokens(tokens, 10, keep=4)
    assert fitted.tokens == [0, 1, 2, 3, 94, 95, 96, 97, 98, 99]
    assert fitted.dropped_tokens == 90
    assert fit_tokens(tokens, 200, keep=4).tokens == tokens


def test_the_reply_keeps_room_within_a_quarter_of_the_window() -> None:
    assert room_for_reply(4096, -1) == 1024
    assert room_for_reply(4096, 64) == 64
    assert room_for_reply(100, -1) == 25
    assert room_for_reply(2, 500) == 1
