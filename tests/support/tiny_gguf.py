"""Writes the tiny test models as GGUF files, the format llama.cpp (and Ollama) load.

A model built by :mod:`tests.support.tiny_model` (a Qwen2 in the Hugging Face layout, its BPE tokenizer
trained with ``tokenizers``) is written with the ``gguf`` package the way llama.cpp's own
converter writes a Qwen2: the same weights under llama.cpp's tensor names, the vocabulary, merges,
token types and special tokens in the metadata, and the chat template from the tokenizer config.
So the GGUF says exactly what the MLX model says, and the same tests can hold both to it.
"""

from __future__ import annotations

import json
from pathlib import Path

# MLX / Hugging Face parameter names -> llama.cpp's (per layer: ``blk.N.``).
_LAYER_NAMES = {
    "self_attn.q_proj": "attn_q",
    "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output",
    "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
    "input_layernorm": "attn_norm",
    "post_attention_layernorm": "ffn_norm",
    "self_attn.q_norm": "attn_q_norm",
    "self_attn.k_norm": "attn_k_norm",
}

# GGUF token types.
NORMAL, CONTROL, USER_DEFINED, UNUSED = 1, 3, 4, 5


def _tensor_name(name: str) -> str:
    if not name.startswith("model.") and name != "lm_head.weight":  # a base model's names
        name = "model." + name
    if name == "model.embed_tokens.weight":
        return "token_embd.weight"
    if name == "model.norm.weight":
        return "output_norm.weight"
    if name == "lm_head.weight":
        return "output.weight"
    prefix, _, rest = name.removeprefix("model.layers.").partition(".")
    module, _, kind = rest.rpartition(".")
    return f"blk.{prefix}.{_LAYER_NAMES[module]}.{kind}"


def write_gguf(model_dir: Path, out: Path) -> Path:
    """Write the model in ``model_dir`` as the GGUF file ``out`` (F32) and return ``out``.

    A Qwen2 or a Qwen3; a Qwen3 in the Qwen3-Embedding layout (``1_Pooling``, last-token
    pooling) is written as llama.cpp's converter writes that family: ``pooling_type`` LAST and the
    end-of-text token appended to every input (``add_eos_token``)."""
    import gguf
    import mlx.core as mx
    import numpy as np

    config = json.loads((model_dir / "config.json").read_text())
    tokenizer = json.loads((model_dir / "tokenizer.json").read_text())
    tokenizer_config = json.loads((model_dir / "tokenizer_config.json").read_text())

    vocab: dict[str, int] = dict(tokenizer["model"]["vocab"])
    types = {token: NORMAL for token in vocab}
    for added in tokenizer["added_tokens"]:
        vocab[added["content"]] = added["id"]
        types[added["content"]] = CONTROL if added["special"] else USER_DEFINED
    by_id = sorted(vocab.items(), key=lambda item: item[1])
    assert [i for _, i in by_id] == list(range(len(by_id))), "token ids must be dense"
    tokens = [token for token, _ in by_id]
    token_types = [types[token] for token in tokens]
    for i in range(len(tokens), int(config["vocab_size"])):  # the model's padding ids
        tokens.append(f"[PAD{i}]")
        token_types.append(UNUSED)
    merges = [m if isinstance(m, str) else " ".join(m) for m in tokenizer["model"]["merges"]]

    arch = str(config["model_type"])
    embedding = (model_dir / "1_Pooling" / "config.json").is_file()
    writer = gguf.GGUFWriter(str(out), arch)
    writer.add_name(model_dir.name)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    writer.add_context_length(int(config["max_position_embeddings"]))
    writer.add_embedding_length(int(config["hidden_size"]))
    writer.add_block_count(int(config["num_hidden_layers"]))
    writer.add_feed_forward_length(int(config["intermediate_size"]))
    writer.add_head_count(int(config["num_attention_heads"]))
    writer.add_head_count_kv(int(config["num_key_value_heads"]))
    writer.add_layer_norm_rms_eps(float(config["rms_norm_eps"]))
    writer.add_rope_freq_base(float(config["rope_theta"]))
    if "head_dim" in config:
        writer.add_key_length(int(config["head_dim"]))
        writer.add_value_length(int(config["head_dim"]))
    if embedding:
        writer.add_pooling_type(gguf.PoolingType.LAST)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("gpt-2")  # the tokenizer's ByteLevel split is GPT-2's pattern
    writer.add_token_list(tokens)
    writer.add_token_types(token_types)
    writer.add_token_merges(merges)
    writer.add_eos_token_id(vocab["<|endoftext|>" if embedding else tokenizer_config["eos_token"]])
    writer.add_pad_token_id(vocab[tokenizer_config["pad_token"]])
    writer.add_add_bos_token(False)
    if embedding:
        writer.add_add_eos_token(True)
    writer.add_chat_template(tokenizer_config["chat_template"])

    weights = mx.load(str(model_dir / "model.safetensors"))
    for name in sorted(weights):
        array = np.array(weights[name].astype(mx.float32))
        writer.add_tensor(_tensor_name(name), array)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return out


def write_projector(out: Path, text_width: int, *, width: int = 32, image: int = 56, patch: int = 14) -> Path:
    """A LLaVA-style projector GGUF (``mmproj``) for a language model ``text_width`` wide, as
    llama.cpp's converter writes one: a one-block CLIP vision encoder (class token, learned
    positions, pre-norm) and the two-layer MLP projector (``mm.0``, ``mm.2``), random weights.
    An image becomes ``(image / patch) ** 2`` tokens (16), whatever its size: the encoder reads it
    resized to ``image`` pixels square."""
    import gguf
    import numpy as np

    rng = np.random.RandomState(0)
    writer = gguf.GGUFWriter(str(out), "clip")
    writer.add_clip_has_vision_encoder(True)
    writer.add_clip_projector_type("mlp")
    writer.add_vision_image_size(image)
    writer.add_vision_patch_size(patch)
    writer.add_vision_embedding_length(width)
    writer.add_vision_feed_forward_length(width * 2)
    writer.add_vision_projection_dim(text_width)
    writer.add_vision_block_count(1)
    writer.add_vision_head_count(2)
    writer.add_vision_attention_layernorm_eps(1e-5)
    writer.add_vision_image_mean([0.5, 0.5, 0.5])
    writer.add_vision_image_std([0.5, 0.5, 0.5])
    writer.add_vision_use_gelu(True)

    def random(name: str, *shape: int, scale: float = 0.2) -> None:
        writer.add_tensor(name, (rng.randn(*shape) * scale).astype(np.float32))

    def norm(name: str) -> None:
        writer.add_tensor(f"{name}.weight", np.ones(width, np.float32))
        writer.add_tensor(f"{name}.bias", np.zeros(width, np.float32))

    random("v.patch_embd.weight", width, 3, patch, patch)
    random("v.class_embd", width)
    random("v.position_embd.weight", (image // patch) ** 2 + 1, width)
    norm("v.pre_ln")
    for kind in ("attn_q", "attn_k", "attn_v", "attn_out"):
        random(f"v.blk.0.{kind}.weight", width, width)
        random(f"v.blk.0.{kind}.bias", width)
    norm("v.blk.0.ln1")
    norm("v.blk.0.ln2")
    random("v.blk.0.ffn_up.weight", width * 2, width)
    random("v.blk.0.ffn_up.bias", width * 2)
    random("v.blk.0.ffn_down.weight", width, width * 2)
    random("v.blk.0.ffn_down.bias", width)
    random("mm.0.weight", text_width, width)
    random("mm.0.bias", text_width)
    random("mm.2.weight", text_width, text_width, scale=1.0)  # loud enough to steer the reply
    random("mm.2.bias", text_width)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return out
