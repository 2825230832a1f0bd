"""What the grammars let through, sampled at random under their own masks (no model, no server).

A byte-level BPE tokenizer is trained in a few milliseconds; each test draws uniformly among the
tokens the constraint allows, which is what an untrained model does, at its worst. So a property
that holds here holds for any model: key order, no invented keys, ``$defs`` in tool parameters,
and a reply that is tool calls from its first token when a call is required.
"""

from __future__ import annotations

import json
from enum import StrEnum
from typing import Any

import jsonschema
import numpy as np
import pytest
from llguidance import LLMatcher
from llguidance.hf import from_tokenizer
from pydantic import BaseModel, Field
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from tests.support.schema_corpus import corpus, declared_order_holds
from validation.constraint import GrammarCache
from validation.grammar_schema import grammar_copy
from validation.grammars import tool_grammar
from validation.structured import prepare_format
from validation.tool_calls import make_parser
from validation.toolset import ToolSet, template_tool

EOS = 0


@pytest.fixture(scope="module")
def sampler() -> tuple[GrammarCache, PreTrainedTokenizerFast]:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    corpus = ['{"reasoning": "x", "answer": 1}', "<tool_call>\n", '{"name": "get_weather"}'] * 10
    trainer = trainers.BpeTrainer(
        vocab_size=320, special_tokens=["<eos>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(corpus, trainer)
    hf = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<eos>")
    return GrammarCache(from_tokenizer(hf), len(hf), [EOS]), hf


def sample(
    sampler: tuple[GrammarCache, PreTrainedTokenizerFast], grammar: str, seed: int, prefix: str = ""
) -> str:
    """Uniform draws among the allowed tokens, after the tokens of ``prefix``, until the end."""
    cache, hf = sampler
    constraint = cache.constraint(grammar)
    rng = np.random.default_rng(seed)
    out: list[int] = hf.encode(prefix) if prefix else []
    constraint.consume(out)
    for _ in range(400):
        if constraint.finished:
            break
        token = int(rng.choice(np.flatnonzero(constraint.allowed())))
        if token == EOS:
            break
        constraint.consume([token])
        out.append(token)
    return str(hf.decode(out))


class Unit(StrEnum):
    CELSIUS = "celsius"
    FAHRENHEIT = "fahrenheit"


class Place(BaseModel):
    city: str = Field(max_length=4)
    country: str | None = Field(default=None, max_length=2)


class Weather(BaseModel):
    place: Place
    unit: Unit


REASON_FIRST = {
    "type": "object",
    "properties": {
        "reasoning": {"type": "string", "maxLength": 4},
        "answer": {"type": "integer", "minimum": 0, "maximum": 9},
    },
    "required": ["reasoning", "answer"],
}


@pytest.mark.parametrize("seed", range(5))
def test_keys_come_in_the_declared_order_and_none_are_invented(sampler: Any, seed: int) -> None:
    for schema in (REASON_FIRST, Weather.model_json_schema()):
        text = sample(sampler, prepare_format(schema).grammar, seed)
        value = json.loads(text)
        jsonschema.validate(value, schema)
        assert list(value) == [k for k in schema["properties"] if k in value], text
        assert set(value) <= set(schema["properties"]), text


def test_schemas_differing_only_in_order_are_different_formats() -> None:
    swapped = REASON_FIRST | {"properties": dict(reversed(REASON_FIRST["properties"].items()))}
    first, second = prepare_format(REASON_FIRST).grammar, prepare_format(swapped).grammar
    assert first != second
    assert first.index("reasoning") < first.index("answer")
    assert second.index("answer") < second.index("reasoning")


def test_the_grammar_copy_closes_only_what_it_may() -> None:
    schema = {
        "type": "object",
        "properties": {
            "open": {"type": "object", "properties": {"a": {}}, "additionalProperties": True},
            "typed": {"type": "object", "additionalProperties": {"type": "integer"}},
            "merged": {"allOf": [{"properties": {"a": {}}}, {"properties": {"b": {}}}]},
            "ref": {"$ref": "#/$defs/x", "properties": {"c": {}}},
            "const": {"const": {"properties": {"k": 1}, "format": "date"}},
            "day": {"type": "string", "format": "date"},
        },
        "$defs": {"x": {"properties": {"y": {}}}},
    }
    copy = grammar_copy(schema)
    assert copy["additionalProperties"] is False
    props = copy["properties"]
    assert props["open"]["additionalProperties"] is True
    assert props["typed"]["additionalProperties"] == {"type": "integer"}
    assert all("additionalProperties" not in branch for branch in props["merged"]["allOf"])
    assert "additionalProperties" not in props["ref"]
    assert props["const"] == schema["properties"]["const"], "values are not schemas"
    assert "format" not in props["day"] and props["day"]["pattern"].startswith("^")
    assert copy["$defs"]["x"]["additionalProperties"] is False
    assert list(copy["properties"]) == list(schema["properties"])


def weather_tools() -> list[dict[str, Any]]:
    other = {
        "type": "object",
        "properties": {"n": {"type": "integer", "minimum": 0, "maximum": 5}},
        "required": ["n"],
    }
    return [
        {"type": "function", "function": {"name": "get_weather", "parameters": Weather.model_json_schema()}},
        {"type": "function", "function": {"name": "count", "parameters": other}},
    ]


def test_tool_parameters_with_defs_and_refs_compile() -> None:
    grammar = tool_grammar("hermes", weather_tools(), thinking=False, inside=False)
    assert grammar is not None and LLMatcher.validate_grammar(grammar) == ""


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("parallel", [True, False])
def test_a_required_call_comes_from_the_first_token(sampler: Any, seed: int, parallel: bool) -> None:
    tools = weather_tools()
    grammar = tool_grammar("hermes", tools, thinking=False, inside=False, required=True, parallel=parallel)
    assert grammar is not None
    text = sample(sampler, grammar, seed)
    assert text.startswith("<tool_call>"), text
    parser = make_parser("hermes")
    parsed = parser.feed(text)
    parsed.extend(parser.finish())
    assert parsed.content.strip() == "" and not parsed.errors, text
    assert parsed.calls and (parallel or len(parsed.calls) == 1)
    toolset = ToolSet(tools)
    assert all(toolset.problem(call) is None for call in parsed.calls)


def test_a_required_call_may_follow_reasoning(sampler: Any) -> None:
    grammar = tool_grammar("hermes", weather_tools(), thinking=True, inside=True, required=True)
    assert grammar is not None
    for seed in range(4):
        text = sample(sampler, grammar, seed, prefix="I should call.</think>")
        assert text.split("</think>", 1)[1].lstrip("\n").startswith("<tool_call>"), text


def test_templates_get_the_shape_models_were_trained_on() -> None:
    sent = {
        "type": "function",
        "function": {
            "name": "f",
            "description": "d",
            "parameters": {"type": "object"},
            "strict": True,
        },
        "cache_control": {"type": "ephemeral"},
    }
    expected = {
        "type": "function",
        "function": {"name": "f", "description": "d", "parameters": {"type": "object"}},
    }
    assert template_tool(sent) == expected
    assert ToolSet([sent]).for_template == [expected]


@pytest.mark.parametrize("name", list(corpus()))
def test_every_corpus_schema_decodes_valid_and_in_order(sampler: Any, name: str) -> None:
    """The schemas real clients send compile, and whatever the mask lets through is valid."""
    schema = corpus()[name]
    fmt = prepare_format(schema)
    for seed in range(3):
        text = sample(sampler, fmt.grammar, seed)
        fmt.validate(text)
        assert declared_order_holds(json.loads(text), schema, schema), text


@pytest.mark.parametrize("seed", range(4))
def test_llama3_style_calls_can_be_required_too(sampler: Any, seed: int) -> None:
    """Llama 3's convention has no marker: a required call is the bare JSON object, alone."""
    tools = weather_tools()
    grammar = tool_grammar("llama3", tools, thinking=False, inside=False, required=True)
    assert grammar is not None and tool_grammar("llama3", tools, thinking=False, inside=False) is None
    text = sample(sampler, grammar, seed)
    parser = make_parser("llama3")
    parsed = parser.feed(text)
    parsed.extend(parser.finish())
    assert parsed.content.strip() == "" and not parsed.errors and len(parsed.calls) == 1, text
    assert ToolSet(tools).problem(parsed.calls[0]) is None
