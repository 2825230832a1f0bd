"""The grammar constraint on its own: caching, padding ids, and the call after the end token."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from llguidance.hf import from_tokenizer
from transformers import PreTrainedTokenizerFast

from validation.constraint import ConstraintError, GrammarCache
from validation.structured import prepare_format


def make_cache(model_dir: Path) -> tuple[GrammarCache, PreTrainedTokenizerFast, int, int]:
    hf = PreTrainedTokenizerFast.from_pretrained(str(model_dir))
    n_vocab = json.loads((model_dir / "config.json").read_text())["vocab_size"]
    eos = hf.convert_tokens_to_ids("<|im_end|>")
    return GrammarCache(from_tokenizer(hf, n_vocab=n_vocab, eos_token=eos), n_vocab, [eos]), hf, n_vocab, eos


def test_grammars_compile_once_per_schema(json_random_dir: Path) -> None:
    cache, *_ = make_cache(json_random_dir)
    grammar = prepare_format({"type": "object", "properties": {"a": {"type": "integer"}}}).grammar
    first, second = cache.constraint(grammar), cache.constraint(grammar)
    assert len(cache) == 1 and first is not second, "a fresh state per request, one compile"
    cache.constraint(prepare_format("json").grammar)
    assert len(cache) == 2


def test_padding_ids_are_never_allowed(json_random_dir: Path) -> None:
    cache, hf, n_vocab, _ = make_cache(json_random_dir)
    assert n_vocab > len(hf), "the fixture pads the model's vocabulary"
    allowed = cache.constraint(prepare_format("json").grammar).allowed()
    assert allowed.shape == (n_vocab,)
    assert not allowed[len(hf) :].any()
    assert allowed[hf.convert_tokens_to_ids("{")]


def test_after_the_end_only_the_end_token(json_random_dir: Path) -> None:
    cache, hf, _, eos = make_cache(json_random_dir)
    constraint = cache.constraint(
        prepare_format({"type": "object", "properties": {}, "additionalProperties": False}).grammar
    )
    constraint.consume(hf.encode("{}"))
    assert constraint.finished
    assert np.flatnonzero(constraint.allowed()).tolist() == [eos]
    constraint.consume([eos])  # mlx-lm computes one step past the end token
    constraint.consume([eos, 5])
    assert np.flatnonzero(constraint.allowed()).tolist() == [eos]


def test_json_mode_is_any_object_and_only_an_object(json_random_dir: Path) -> None:
    cache, hf, _, _ = make_cache(json_random_dir)
    grammar = prepare_format("json").grammar
    nested = cache.constraint(grammar)
    nested.consume(hf.encode('{"a":{"b":[1,2,{"c":null}]},"d":"x"}'))
    assert nested.finished
    with pytest.raises(ConstraintError):
        cache.constraint(grammar).consume(hf.encode("[1]"))
    with pytest.raises(ConstraintError):
        cache.constraint(grammar).consume(hf.encode('{ "a": 1}'))  # no free whitespace
