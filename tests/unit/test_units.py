"""Pure pieces: stop matching, durations, host parsing, settings from the environment, and the
batch's prefill chunk sizing."""

from __future__ import annotations

import pytest

from app.config import VARIABLES, Settings, SettingsError, environment_help, parse_host
from app.protocol import modelfile
from app.protocol.durations import DurationError, parse_duration
from inference.engine.stops import StopMatcher
from inference.store.model_store import InvalidModelName, normalize_name


def run_stops(stops: list[str], pieces: list[str]) -> tuple[str, bool]:
    matcher = StopMatcher(stops)
    out = []
    for piece in pieces:
        text, stopped = matcher.feed(piece)
        out.append(text)
        if stopped:
            return "".join(out), True
    return "".join(out) + matcher.flush(), False


@pytest.mark.parametrize(
    ("stops", "pieces", "expected"),
    [
        (["END"], ["ab", "E", "N", "D", "cd"], ("ab", True)),
        (["END"], ["abE", "Nx"], ("abENx", False)),
        (["END"], ["abEN"], ("abEN", False)),
        (["\n\n", "###"], ["a\n", "#", "##"], ("a\n", True)),
        (["aab"], ["a", "a", "a", "b"], ("a", True)),
        ([], ["x", "y"], ("xy", False)),
    ],
)
def test_stop_matcher(stops: list[str], pieces: list[str], expected: tuple[str, bool]) -> None:
    assert run_stops(stops, pieces) == expected


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (300, 300.0),
        (0, 0.0),
        (-1, -1.0),
        (1.5, 1.5),
        ("5m", 300.0),
        ("1h30m", 5400.0),
        ("300ms", 0.3),
        ("-1m", -60.0),
        ("0", 0.0),
    ],
)
def test_durations(value: object, seconds: float) -> None:
    assert parse_duration(value) == pytest.approx(seconds)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("300", 'time: missing unit in duration "300"'),
        (True, "Unsupported type: 'bool'"),
        ("5x", "invalid duration"),
        ({}, "Unsupported type"),
    ],
)
def test_bad_durations(value: object, message: str) -> None:
    with pytest.raises(DurationError, match=message.replace("(", r"\(")):
        parse_duration(value)


def test_env_keep_alive_accepts_bare_seconds() -> None:
    assert parse_duration("300", bare_number_is_seconds=True) == 300.0


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("0.0.0.0", ("0.0.0.0", 11434)),
        ("127.0.0.1:8080", ("127.0.0.1", 8080)),
        ("http://localhost:9000/", ("localhost", 9000)),
        ("[::1]:5000", ("::1", 5000)),
        (":7000", ("127.0.0.1", 7000)),
    ],
)
def test_parse_host(value: str, expected: tuple[str, int]) -> None:
    assert parse_host(value) == expected


def test_settings_prefer_trillm_then_ollama(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TRILLM_HOST", raising=False)
    monkeypatch.setenv("OLLAMA_HOST", "0.0.0.0:1234")
    assert (Settings.from_env().host, Settings.from_env().port) == ("0.0.0.0", 1234)
    monkeypatch.setenv("TRILLM_HOST", "127.0.0.2:4321")
    assert (Settings.from_env().host, Settings.from_env().port) == ("127.0.0.2", 4321)
    assert Settings.from_env(host="localhost:1").port == 1
    monkeypatch.setenv("TRILLM_KEEP_ALIVE", "10m")
    monkeypatch.setenv("TRILLM_MODELS", "/tmp/somewhere")
    settings = Settings.from_env()
    assert settings.keep_alive == 600.0 and str(settings.models) == "/tmp/somewhere"


@pytest.mark.parametrize(
    ("name", "canonical"),
    [
        ("tiny", "tiny:latest"),
        ("Tiny:Q4", "Tiny:Q4"),
        ("ns/model:tag", "ns/model:tag"),
        ("hf.co/org/repo", "org/repo:latest"),
        ("huggingface.co/org/repo:Q4_K_M", "org/repo:Q4_K_M"),
    ],
)
def test_names(name: str, canonical: str) -> None:
    assert normalize_name(name) == canonical


@pytest.mark.parametrize(
    "name",
    [
        "../x",
        "a/../b",
        "/abs",
        "a\\b",
        "x\x00",
        "a" * 81,
        "%2e%2e%2f",
        "a:b:c",
        "",
        "a/b/c",
        "x\n",
        "hf.co/../x",
    ],
)
def test_bad_names(name: str) -> None:
    with pytest.raises(InvalidModelName):
        normalize_name(name)


def test_modelfile_round_trip() -> None:
    text = """# a comment
FROM ./weights
PARAMETER temperature 0.2
PARAMETER num_predict 64
PARAMETER stop "<|im_end|>"
PARAMETER stop </s>
SYSTEM \"\"\"You are
a pirate.\"\"\"
template "{{ messages }}"
MESSAGE user hello there
MESSAGE assistant "arr \\"matey\\""
LICENSE MIT
"""
    body = modelfile.parse(text)
    assert body == {
        "from": "./weights",
        "parameters": {"temperature": 0.2, "num_predict": 64, "stop": ["<|im_end|>", "</s>"]},
        "system": "You are\na pirate.",
        "template": "{{ messages }}",
        "messages": [
            {"role": "user", "content": "hello there"},
            {"role": "assistant", "content": 'arr "matey"'},
        ],
        "license": "MIT",
    }
    rendered = modelfile.render(
        "./weights",
        parameters=body["parameters"],
        system=body["system"],
        template=body["template"],
        messages=body["messages"],
        license_=body["license"],
    )
    assert modelfile.parse(rendered) == body


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("SYSTEM hi\n", "needs a FROM"),
        ("FROM x\nBOGUS y\n", "unknown command 'BOGUS'"),
        ("FROM x\nPARAMETER top_k many\n", "top_k"),
        ('FROM x\nSYSTEM """never closed\n', "never closed"),
        ("FROM x\nMESSAGE robot hi\n", "MESSAGE role"),
        ("FROM x\nADAPTER ./lora\n", "not supported"),
        ("FROM\n", "missing value"),
    ],
)
def test_modelfile_errors_name_the_problem(text: str, words: str) -> None:
    with pytest.raises(modelfile.ModelfileError, match=words):
        modelfile.parse(text)


def test_the_date_grammar_allows_exactly_the_dates_validation_accepts() -> None:
    """``format: date`` is enforced with a pattern that agrees with jsonschema's check (which is
    ``date.fromisoformat``), including leap days and the absence of year 0."""
    import datetime
    import re

    from validation.grammar_schema import DATE_PATTERN

    pattern = re.compile(DATE_PATTERN)
    for year in (0, 1, 4, 100, 400, 1900, 2000, 2023, 2024, 9999):
        for month in range(14):
            for day in range(33):
                text = f"{year:04d}-{month:02d}-{day:02d}"
                try:
                    valid = bool(datetime.date.fromisoformat(text))
                except ValueError:
                    valid = False
                assert bool(pattern.fullmatch(text)) == valid, text


def test_the_chunk_sizer_waits_for_a_plain_step_then_keeps_within_its_bounds() -> None:
    from inference.engine.batch import MIN_INTERLEAVED_CHUNK, ChunkSizer

    sizer = ChunkSizer(32)
    sizer.chunk_step(10.0, 512)  # no plain step measured yet: nothing to compare with
    assert sizer.chunk == 32
    sizer.plain_step(0.010)
    sizer.chunk_step(0.015, 512)  # half the bound: grow
    assert sizer.chunk > 32
    sizer.chunk_step(0.060, 512)  # twice the bound: halve
    assert sizer.chunk == 49 // 2
    for _ in range(20):
        sizer.chunk_step(1.0, 512)
    assert sizer.chunk == MIN_INTERLEAVED_CHUNK
    for _ in range(20):
        sizer.chunk_step(0.001, 100)
    assert sizer.chunk == 100  # the request's own prefill size caps it


@pytest.mark.parametrize(
    ("fixed", "per_token"), [(0.030, 0.001), (0.005, 0.0002), (0.040, 0.002), (0.0, 0.00005)]
)
def test_the_chunk_sizer_settles_where_a_step_costs_at_most_three_plain_ones(
    fixed: float, per_token: float
) -> None:
    """Against a cost model of a step with a chunk (a plain step, a fixed cost, a cost per
    token), the chunk settles where such a step takes 0.8 to 1 of three plain steps."""
    from inference.engine.batch import ChunkSizer

    plain = 0.030
    sizer = ChunkSizer(32)
    sizer.plain_step(plain)
    for _ in range(40):
        sizer.chunk_step(plain + fixed + sizer.chunk * per_token, 4096)
    step = plain + fixed + sizer.chunk * per_token
    assert 0.8 * 3 * plain <= step <= 3 * plain, (sizer.chunk, step)


@pytest.mark.parametrize(
    ("variable", "value", "says"),
    [
        ("TRILLM_MAX_QUEUE", "abc", "TRILLM_MAX_QUEUE='abc': expected a whole number"),
        ("OLLAMA_NUM_PARALLEL", "0", "OLLAMA_NUM_PARALLEL='0': expected a whole number of at least 1"),
        ("TRILLM_METRICS", "maybe", "TRILLM_METRICS='maybe': expected 1/true/yes/on or 0/false/no/off"),
        ("TRILLM_BACKEND", "cuda", "TRILLM_BACKEND='cuda': expected one of mlx, llamacpp"),
        ("TRILLM_KEEP_ALIVE", "soon", "TRILLM_KEEP_ALIVE='soon'"),
        ("TRILLM_HOST", "localhost:http", "TRILLM_HOST='localhost:http': expected host[:port]"),
    ],
)
def test_a_bad_setting_names_its_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, says: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(SettingsError) as caught:
        Settings.from_env()
    assert str(caught.value).startswith(says)


def test_every_setting_is_read_the_same_way(monkeypatch: pytest.MonkeyPatch) -> None:
    """TRILLM_* wins, OLLAMA_* is the fallback only where Ollama has the variable, and ``serve
    --help`` lists each one with its default."""
    monkeypatch.setenv("OLLAMA_MAX_QUEUE", "7")
    assert Settings.from_env().max_queue == 7
    monkeypatch.setenv("TRILLM_MAX_QUEUE", "9")
    assert Settings.from_env().max_queue == 9
    monkeypatch.setenv("OLLAMA_METRICS", "1")  # not an Ollama variable: ignored
    assert not Settings.from_env().metrics
    monkeypatch.setenv("TRILLM_DISABLE_MANAGEMENT", "yes")
    assert not Settings.from_env().management
    listed = environment_help()
    for variable in VARIABLES:
        assert variable.names()[0] in listed
    assert "TRILLM_MAX_QUEUE / OLLAMA_MAX_QUEUE" in listed and "[default: 512]" in listed
