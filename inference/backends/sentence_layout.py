"""How a Hugging Face model directory says it is an embedding model, and how it pools.

Embedding models ship in the sentence-transformers layout: ``modules.json`` lists the pipeline
(the transformer, a ``Pooling`` module, often ``Normalize``), and the pooling module's folder
(``1_Pooling/config.json``) says how token states become one vector (``pooling_mode_mean_tokens``,
``pooling_mode_cls_token``, ``pooling_mode_lasttoken``). Decoder models used for embeddings (the
Qwen3-Embedding family) are recognised the same way: their ``config.json`` is a causal LM's. An
encoder (BERT, XLM-RoBERTa, ModernBERT) without that file is an embedding model too, mean-pooled,
which is sentence-transformers' own default.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

ENCODER_TYPES = frozenset({"bert", "xlm-roberta", "xlm_roberta", "modernbert", "roberta", "distilbert"})
POOLING_MODES = (
    ("pooling_mode_lasttoken", "last"),
    ("pooling_mode_cls_token", "cls"),
    ("pooling_mode_mean_tokens", "mean"),
)


def pooling_of(path: Path, config: dict[str, Any]) -> str:
    """``"mean"``, ``"cls"`` or ``"last"`` for an embedding model directory; ``""`` otherwise."""
    modules = path / "modules.json"
    if modules.is_file():
        try:
            listed = json.loads(modules.read_text())
        except (OSError, ValueError):
            listed = []
        for module in listed if isinstance(listed, list) else []:
            if isinstance(module, dict) and str(module.get("type", "")).endswith("Pooling"):
                settings_file = path / str(module.get("path", "")) / "config.json"
                settings = json.loads(settings_file.read_text()) if settings_file.is_file() else {}
                for key, mode in POOLING_MODES:
                    if settings.get(key):
                        return mode
                return "mean"
    if config.get("model_type") in ENCODER_TYPES:
        return "mean"
    return ""
