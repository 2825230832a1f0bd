"""Tiny embedding models in the layouts real ones ship in, built in the test session (no downloads).

- :func:`build_encoder`: a BERT with a WordPiece tokenizer (``[CLS] text [SEP]``) in the
  sentence-transformers layout (``modules.json``, ``1_Pooling/config.json``: mean pooling,
  ``2_Normalize``), as ``all-MiniLM-L6-v2`` and the BGE / E5 families ship.
- :func:`build_decoder`: a Qwen3 in the Qwen3-Embedding layout: a causal LM's ``config.json``,
  weights under the base model's names (no ``model.`` prefix), a tokenizer that appends
  ``<|endoftext|>``, and last-token pooling declared in ``1_Pooling/config.json``.

Weights are random (an embedding needs no training to be a function of its input); they are made
by the library that serves them (``mlx-embeddings``' own model classes) and saved under the names
Hugging Face checkpoints use. :func:`tests.support.tiny_gguf.write_gguf` writes the decoder as a
GGUF for llama.cpp.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.support.tiny_model import CORPUS, synthetic_corpus

WORDPIECE_SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def _sentence_layout(out: Path, width: int, mode: str) -> None:
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"},
    ]
    (out / "modules.json").write_text(json.dumps(modules, indent=2))
    pooling = {
        "word_embedding_dimension": width,
        "pooling_mode_cls_token": mode == "cls",
        "pooling_mode_mean_tokens": mode == "mean",
        "pooling_mode_max_tokens": False,
        "pooling_mode_lasttoken": mode == "last",
    }
    (out / "1_Pooling").mkdir(exist_ok=True)
    (out / "1_Pooling" / "config.json").write_text(json.dumps(pooling, indent=2))
    (out / "2_Normalize").mkdir(exist_ok=True)
    (out / "config_sentence_transformers.json").write_text(json.dumps({"prompts": {}}))


def _save(model: Any, out: Path, strip: str = "") -> None:
    import mlx.core as mx
    from mlx.utils import tree_flatten

    mx.eval(model.parameters())
    weights = {name.removeprefix(strip): value for name, value in tree_flatten(model.parameters())}
    mx.save_safetensors(str(out / "model.safetensors"), weights)


def build_encoder(
    out: Path, *, width: int = 32, layers: int = 2, heads: int = 2, vocab_size: int = 400, seed: int = 0
) -> Path:
    """A tiny mean-pooled BERT embedding model directory (see the module docstring)."""
    import mlx.core as mx
    from mlx_embeddings.models import bert
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

    out.mkdir(parents=True, exist_ok=True)
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    trainer = trainers.WordPieceTrainer(
        vocab_size=vocab_size, special_tokens=WORDPIECE_SPECIALS, show_progress=False
    )
    tok.train_from_iterator(
        CORPUS * 4 + synthetic_corpus(2000 if vocab_size <= 1000 else 20000), trainer=trainer
    )
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls), ("[SEP]", sep)],
    )
    tok.save(str(out / "tokenizer.json"))
    tokenizer_config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "cls_token": "[CLS]",
        "sep_token": "[SEP]",
        "pad_token": "[PAD]",
        "unk_token": "[UNK]",
        "mask_token": "[MASK]",
        "model_max_length": 128,
    }
    (out / "tokenizer_config.json").write_text(json.dumps(tokenizer_config, indent=2))
    config = {
        "architectures": ["BertModel"],
        "model_type": "bert",
        "hidden_size": width,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "intermediate_size": width * 4 if width >= 128 else width * 2,
        "max_position_embeddings": 512 if width >= 128 else 128,
        "type_vocab_size": 2,
        "vocab_size": tok.get_vocab_size(),
        "layer_norm_eps": 1e-12,
        "hidden_act": "gelu",
        "pad_token_id": tok.token_to_id("[PAD]"),
        "torch_dtype": "float32",
    }
    (out / "config.json").write_text(json.dumps(config, indent=2))
    mx.random.seed(seed)
    _save(bert.Model(bert.ModelArgs.from_dict(config)), out)
    _sentence_layout(out, width, "mean")
    return out


def build_decoder(
    out: Path, *, width: int = 32, layers: int = 2, vocab_size: int = 400, seed: int = 1
) -> Path:
    """A tiny last-token-pooled Qwen3 embedding model directory (see the module docstring)."""
    import mlx.core as mx
    from mlx_embeddings.models import qwen3
    from tokenizers import Tokenizer, processors

    from tests.support.tiny_model import _train_tokenizer

    out.mkdir(parents=True, exist_ok=True)
    _train_tokenizer(out, vocab_size, CORPUS * 4 + synthetic_corpus(2000))
    tok = Tokenizer.from_file(str(out / "tokenizer.json"))
    end = tok.token_to_id("<|endoftext|>")
    tok.post_processor = processors.TemplateProcessing(
        single="$A <|endoftext|>",
        pair="$A <|endoftext|> $B:1 <|endoftext|>:1",
        special_tokens=[("<|endoftext|>", end)],
    )
    tok.save(str(out / "tokenizer.json"))
    config = {
        "architectures": ["Qwen3ForCausalLM"],
        "model_type": "qwen3",
        "hidden_size": width,
        "intermediate_size": width * 2,
        "num_hidden_layers": layers,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "head_dim": width // 4,
        "rms_norm_eps": 1e-6,
        "vocab_size": tok.get_vocab_size(),
        "max_position_embeddings": 512,
        "rope_theta": 1000000.0,
        "tie_word_embeddings": True,
        "torch_dtype": "float32",
    }
    (out / "config.json").write_text(json.dumps(config, indent=2))
    mx.random.seed(seed)
    _save(qwen3.Model(qwen3.ModelArgs.from_dict(config)), out, strip="model.")
    _sentence_layout(out, width, "last")
    return out
