"""A tiny vision-language model in the layout Qwen2-VL checkpoints ship in, built in the test session.

The directory holds what ``mlx_vlm.load`` reads from a real ``Qwen/Qwen2-VL-*`` or
``mlx-community/Qwen2-VL-*`` download: ``config.json`` (the text model's fields at the top level,
``vision_config`` beside them, the image token ids), ``preprocessor_config.json`` (the image
processor: patch and merge sizes, the pixel bounds that decide how many image tokens a picture
becomes), a byte-level BPE tokenizer with the vision special tokens, and a chat template that
writes ``<|vision_start|><|image_pad|><|vision_end|>`` where a message has an image part (and
declares tools, as Qwen2.5-VL's does).

Weights are random, made by mlx-vlm's own model class and saved under its names (which its
``sanitize`` leaves as they are). No training: the tests compare a reply with and without an image
and across identical requests, which random weights decide as well as trained ones.
"""

from __future__ import annotations

import json
from pathlib import Path

from tests.support.tiny_model import CORPUS, _train_tokenizer

VISION_TOKENS = ["<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"]

QWEN2_VL_TEMPLATE = (
    # Tools as Qwen2.5-VL's template declares them (Hermes-style <tool_call> replies).
    "{% if tools %}<|im_start|>system\n# Tools\n<tools>\n"
    "{% for tool in tools %}{{ tool | tojson }}\n{% endfor %}</tools>\n"
    'Reply with <tool_call>{"name": ..., "arguments": ...}</tool_call><|im_end|>\n{% endif %}'
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' }}"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}{{ '<|vision_start|><|image_pad|><|vision_end|>' }}"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}"
    "{{ '<|im_end|>\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

PATCH = 14
MERGE = 2
# The most pixels an image keeps (larger ones are scaled down): 256 merged image tokens at most.
MAX_PIXELS = (PATCH * MERGE) ** 2 * 256
LOUDER = 8.0


def build_qwen2_vl(
    out: Path, *, width: int = 64, layers: int = 2, vocab_size: int = 400, seed: int = 0
) -> Path:
    """Write a complete tiny Qwen2-VL directory to ``out`` (see the module docstring)."""
    import mlx.core as mx
    from mlx.utils import tree_flatten
    from mlx_vlm.models import qwen2_vl
    from mlx_vlm.utils import update_module_configs
    from tokenizers import Tokenizer

    out.mkdir(parents=True, exist_ok=True)
    _train_tokenizer(out, vocab_size, CORPUS * 4, QWEN2_VL_TEMPLATE, special=tuple(VISION_TOKENS))
    tok = Tokenizer.from_file(str(out / "tokenizer.json"))
    ids = {t: tok.token_to_id(t) for t in VISION_TOKENS}
    preprocessor = {
        "image_processor_type": "Qwen2VLImageProcessor",
        "processor_class": "Qwen2VLProcessor",
        "patch_size": PATCH,
        "temporal_patch_size": 2,
        "merge_size": MERGE,
        "min_pixels": (PATCH * MERGE) ** 2,
        "max_pixels": MAX_PIXELS,
        "image_mean": [0.48145466, 0.4578275, 0.40821073],
        "image_std": [0.26862954, 0.26130258, 0.27577711],
        "do_rescale": True,
        "rescale_factor": 1 / 255,
        "do_normalize": True,
        "do_convert_rgb": True,
    }
    (out / "preprocessor_config.json").write_text(json.dumps(preprocessor, indent=2))
    heads = width // 16  # a head of 16: its 8 rotary pairs split 2/3/3 over time, height, width
    config = {
        "architectures": ["Qwen2VLForConditionalGeneration"],
        "model_type": "qwen2_vl",
        "hidden_size": width,
        "intermediate_size": width * 2,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "num_key_value_heads": 2,
        "rms_norm_eps": 1e-6,
        "vocab_size": tok.get_vocab_size(),
        "max_position_embeddings": 4096,
        "rope_theta": 10000.0,
        "rope_scaling": {"type": "mrope", "mrope_section": [2, 3, 3]},
        "tie_word_embeddings": False,
        "torch_dtype": "float32",
        "eos_token_id": tok.token_to_id("<|im_end|>"),
        "bos_token_id": tok.token_to_id("<|endoftext|>"),
        "image_token_id": ids["<|image_pad|>"],
        "video_token_id": ids["<|video_pad|>"],
        "vision_start_token_id": ids["<|vision_start|>"],
        "vision_end_token_id": ids["<|vision_end|>"],
        "vision_config": {
            "model_type": "qwen2_vl",
            "depth": 1,
            "embed_dim": 32,
            "hidden_size": width,
            "num_heads": 2,
            "mlp_ratio": 2,
            "patch_size": PATCH,
            "spatial_patch_size": PATCH,
            "spatial_merge_size": MERGE,
            "temporal_patch_size": 2,
            "in_channels": 3,
        },
    }
    mx.random.seed(seed)
    model_config = qwen2_vl.ModelConfig.from_dict(json.loads(json.dumps(config)))
    parts = {"text_config": model_config.text_config, "vision_config": config["vision_config"]}
    model_config = update_module_configs(model_config, qwen2_vl, parts, ["text", "vision"])
    model = qwen2_vl.Model(model_config)
    # Random layers add little to the residual stream, so an untrained model's next token is a
    # function of its last one alone (the same for every prompt, which ends in the same cue).
    # Louder attention and MLP outputs make the reply depend on the whole prompt and the image.
    for layer in model.language_model.model.layers:
        layer.self_attn.o_proj.weight = layer.self_attn.o_proj.weight * LOUDER
        layer.mlp.down_proj.weight = layer.mlp.down_proj.weight * LOUDER
    mx.eval(model.parameters())
    weights = dict(tree_flatten(model.parameters()))
    mx.save_safetensors(str(out / "model.safetensors"), weights, metadata={"format": "mlx"})
    (out / "config.json").write_text(json.dumps(config, indent=2))
    return out


def louder_text_model(source: Path, out: Path) -> Path:
    """A copy of a tiny text model (``tests.support.tiny_model``) whose reply depends on the whole
    prompt: attention and MLP outputs :data:`LOUDER`, and an untied output head (see
    :func:`build_qwen2_vl`), for a GGUF vision model's language half."""
    import shutil

    import mlx.core as mx

    out.mkdir(parents=True, exist_ok=True)
    for file in source.iterdir():
        if file.name not in ("model.safetensors", "config.json") and file.is_file():
            shutil.copy(file, out / file.name)
    weights = mx.load(str(source / "model.safetensors"))
    assert isinstance(weights, dict)
    for name in list(weights):
        if name.endswith(("self_attn.o_proj.weight", "mlp.down_proj.weight")):
            weights[name] = weights[name] * LOUDER
    embed = weights["model.embed_tokens.weight"]
    mx.random.seed(1)
    weights["lm_head.weight"] = mx.random.normal(embed.shape) * 0.2
    mx.save_safetensors(str(out / "model.safetensors"), weights, metadata={"format": "mlx"})
    config = json.loads((source / "config.json").read_text()) | {"tie_word_embeddings": False}
    (out / "config.json").write_text(json.dumps(config, indent=2))
    return out
