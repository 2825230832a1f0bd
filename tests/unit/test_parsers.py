"""Tool-call and thinking parsers: every split point of every marker, malformed and multiple calls."""

from __future__ import annotations

import pytest

from validation.thinking import ThinkingParser
from validation.tool_calls import Parsed, ToolCall, detect_format, make_parser


def run(fmt: str, pieces: list[str]) -> Parsed:
    parser = make_parser(fmt)
    out = Parsed()
    for piece in pieces:
        out.extend(parser.feed(piece))
    out.extend(parser.finish())
    return out


def every_split(text: str) -> list[list[str]]:
    """The text whole, cut in two at every point, and one character at a time."""
    return [[text]] + [[text[:i], text[i:]] for i in range(1, len(text))] + [list(text)]


WEATHER = ToolCall("get_weather", {"city": "Paris"})
TIME = ToolCall("get_time", {"zone": "UTC", "precise": True})

CASES: list[tuple[str, str, str, list[ToolCall]]] = [
    # (format, reply, content, calls)
    (
        "hermes",
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>',
        "",
        [WEATHER],
    ),
    (
        "hermes",
        'Let me check. <tool_call>{"name": "get_weather", "arguments": {"city": "Paris"}}</tool_call>'
        '<tool_call>{"name": "get_time", "arguments": "{\\"zone\\": \\"UTC\\", \\"precise\\": true}"}</tool_call> Done.',
        "Let me check.  Done.",
        [WEATHER, TIME],
    ),
    (
        "hermes",
        "No tools needed: 1 < 2 and <tool is not a call.",
        "No tools needed: 1 < 2 and <tool is not a call.",
        [],
    ),
    ("llama3", '{"name": "get_weather", "parameters": {"city": "Paris"}}', "", [WEATHER]),
    (
        "llama3",
        '<|python_tag|>{"name": "get_weather", "parameters": {"city": "Paris"}}; {"name": "get_time", "parameters": {"zone": "UTC", "precise": true}}',
        "",
        [WEATHER, TIME],
    ),
    ("llama3", 'The answer is {"name": "x"}.', 'The answer is {"name": "x"}.', []),
    ("llama3", '{"answer": 42}', '{"answer": 42}', []),
    (
        "mistral",
        '[TOOL_CALLS][{"name": "get_weather", "arguments": {"city": "Paris"}}, {"name": "get_time", "arguments": {"zone": "UTC", "precise": true}}]',
        "",
        [WEATHER, TIME],
    ),
    ("mistral", 'Sure.[TOOL_CALLS]get_weather[ARGS]{"city": "Paris"}', "Sure.", [WEATHER]),
    (
        "qwen3_coder",
        "Checking.\n<tool_call>\n<function=get_time>\n<parameter=zone>\nUTC\n</parameter>\n<parameter=precise>\ntrue\n</parameter>\n</function>\n</tool_call>",
        "Checking.\n",
        [TIME],
    ),
]


@pytest.mark.parametrize(
    ("fmt", "reply", "content", "calls"), CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)]
)
def test_every_split_point_gives_the_same_result(
    fmt: str, reply: str, content: str, calls: list[ToolCall]
) -> None:
    for pieces in every_split(reply):
        out = run(fmt, pieces)
        assert (out.content, out.calls, out.errors) == (content, calls, []), pieces


@pytest.mark.parametrize(
    ("fmt", "reply", "error"),
    [
        ("hermes", "<tool_call>{not json}</tool_call>", "not valid JSON"),
        ("hermes", '<tool_call>{"arguments": {}}</tool_call>', "non-empty string name"),
        ("hermes", '<tool_call>{"name": "f", "arguments": [1]}</tool_call>', "must be a JSON object"),
        ("hermes", "<tool_call>", "empty tool call"),
        ("llama3", '{"name": "f", "parameters": {"a": ', "unterminated tool call"),
        ("mistral", "[TOOL_CALLS]get_weather{}", "expected [ARGS]"),
        ("qwen3_coder", "<tool_call>hello</tool_call>", "<function=NAME>"),
    ],
)
def test_malformed_calls_are_reported_not_dropped(fmt: str, reply: str, error: str) -> None:
    for pieces in every_split(reply):
        out = run(fmt, pieces)
        assert out.calls == [] and len(out.errors) == 1 and error in out.errors[0], pieces


def test_a_call_left_open_at_the_end_still_counts() -> None:
    out = run("hermes", ['<tool_call>{"name": "get_weather", "arguments": {"city": "Paris"}}'])
    assert out.calls == [WEATHER] and not out.errors


@pytest.mark.parametrize(
    ("template", "fmt"),
    [
        ("{% if tools %}<tool_call>{{ x }}</tool_call>{% endif %}", "hermes"),
        ("{% if tools %}<tool_call>\n<function={{ name }}>{% endif %}", "qwen3_coder"),
        ("{% if tools %}[TOOL_CALLS]{% endif %}", "mistral"),
        ('{% if tools %}{"name": ..., "parameters": ...}{% endif %}', "llama3"),
        ("{{ messages }}", None),
        (None, None),
    ],
)
def test_format_detection(template: str | None, fmt: str | None) -> None:
    assert detect_format(template) == fmt


def think(pieces: list[str], inside: bool = False) -> tuple[str, str]:
    parser = ThinkingParser(inside=inside)
    thinking = content = ""
    for piece in pieces:
        t, c = parser.feed(piece)
        thinking, content = thinking + t, content + c
    t, c = parser.finish()
    return thinking + t, content + c


@pytest.mark.parametrize(
    ("reply", "inside", "expected"),
    [
        (
            "<think>\nRayleigh scattering.\n</think>\n\nBecause of Rayleigh scattering.",
            False,
            ("Rayleigh scattering.", "Because of Rayleigh scattering."),
        ),
        ("Plain answer, no <thinking> here.", False, ("", "Plain answer, no <thinking> here.")),
        ("Already thinking.</think>Answer.", True, ("Already thinking.", "Answer.")),
        ("<think>never closed", False, ("never closed", "")),
        ("<think></think>\n\nJust the answer.", False, ("", "Just the answer.")),
    ],
)
def test_thinking_split_at_every_point(reply: str, inside: bool, expected: tuple[str, str]) -> None:
    for pieces in every_split(reply):
        assert think(pieces, inside) == expected, pieces
