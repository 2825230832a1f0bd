"""Builds tiny models in the real Hugging Face / mlx-community on-disk layout for tests.

A byte-level BPE tokenizer is trained with ``tokenizers`` on text written here, a ChatML chat
template is attached, and a small Qwen2 model with random weights is saved as safetensors, so the
result loads through exactly the code path a user's model takes (``mlx_lm.load``). Optionally the
model is trained for a few hundred steps to memorise scripted replies, so tests can assert exact
output under greedy decoding.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]

CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "Hello there! How are you today? I am fine, thank you.",
    "Bonjour, ça va? Très bien, merci. Où est la gare?",
    "Grüße aus München: Straße, Größe, Übung.",
    "你好 世界。今天天气很好。我们去公园吧。",
    "Emoji time: 🎉 🚀 ✨ 🐍 — all in one line.",
    "system user assistant tool function name arguments",
    "One two three four five six seven eight nine ten.",
]

# Scripted replies the trained model memorises: multi-byte characters force byte-level tokens that
# split characters across tokens, which is what the incremental decoder must handle.
SCRIPT: list[tuple[str, str]] = [
    ("Say hello", "Hello! 你好 🎉 Grüße."),
    ("Count to five", "One two three four five."),
]


def synthetic_corpus(lines: int, seed: int = 0) -> list[str]:
    """English-like and JSON text, so a trained vocabulary has tokens like ``":`` and ``"},``."""
    import random

    rng = random.Random(seed)
    words = [w.strip(".,!?:") for line in CORPUS for w in line.split()] + [
        "name", "age", "items", "status", "active", "sku", "qty", "date", "null", "true", "false",
        "id", "value", "type", "city", "weather", "temperature", "unit", "result", "list",
    ]  # fmt: skip
    syllables = [
        "ka",
        "lo",
        "mi",
        "ter",
        "son",
        "ba",
        "re",
        "qu",
        "ix",
        "ne",
        "dor",
        "pa",
        "st",
        "ü",
        "é",
        "ñ",
    ]
    words += ["".join(rng.choice(syllables) for _ in range(rng.randint(2, 5))) for _ in range(lines // 2)]
    out = []
    for _ in range(lines):
        if rng.random() < 0.5:
            out.append(" ".join(rng.choice(words) for _ in range(rng.randint(4, 14))) + ".")
        else:
            doc = {
                rng.choice(words): rng.choice([rng.randint(0, 999), rng.choice(words), None, True, [1, 2]])
                for _ in range(rng.randint(1, 5))
            }
            out.append(json.dumps(doc, ensure_ascii=False, separators=(",", ":")))
    return out


def _train_tokenizer(
    out: Path,
    vocab_size: int,
    corpus: list[str],
    template: str = CHAT_TEMPLATE,
    markers: tuple[str, ...] = (),
    special: tuple[str, ...] = (),
) -> None:
    """Train and save a byte-level BPE tokenizer with its config; ``markers`` are added as plain
    single tokens, ``special`` as special ones (a vision model's image placeholders)."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus, trainer=trainer)
    # Markers such as <think> are single, non-special tokens (as in Qwen): they decode as text.
    tok.add_tokens([AddedToken(m, special=False, normalized=False) for m in markers])
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in special])
    tok.save(str(out / "tokenizer.json"))
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": None,
        "eos_token": "<|im_end|>",
        "pad_token": "<|endoftext|>",
        "unk_token": None,
        "model_max_length": 2048,
        "chat_template": template,
        "add_bos_token": False,
    }
    (out / "tokenizer_config.json").write_text(json.dumps(config, indent=2))
    (out / "special_tokens_map.json").write_text(
        json.dumps({"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"})
    )


def build_model(
    out: Path,
    *,
    hidden_size: int = 64,
    num_layers: int = 2,
    vocab_size: int = 512,
    seed: int = 0,
    train_steps: int = 0,
    corpus_lines: int = 0,
    pad_vocab_to: int = 1,
    extra_corpus: list[str] | None = None,
    template: str = CHAT_TEMPLATE,
    markers: tuple[str, ...] = (),
) -> Path:
    """Write a complete tiny Qwen2 model directory to ``out`` and return it.

    ``corpus_lines`` > 0 trains the tokenizer on that much synthetic English and JSON (a realistic
    vocabulary); ``pad_vocab_to`` rounds the model's vocabulary up, as real checkpoints do, so the
    model has ids the tokenizer never produces.
    """
    import mlx.core as mx
    from mlx.utils import tree_flatten
    from mlx_lm.models import qwen2

    out.mkdir(parents=True, exist_ok=True)
    corpus = synthetic_corpus(corpus_lines) if corpus_lines else CORPUS * 4
    _train_tokenizer(out, vocab_size, corpus + (extra_corpus or []), template, markers)
    from tokenizers import Tokenizer

    real_vocab = Tokenizer.from_file(str(out / "tokenizer.json")).get_vocab_size()
    model_vocab = -(-real_vocab // pad_vocab_to) * pad_vocab_to
    config = {
        "architectures": ["Qwen2ForCausalLM"],
        "model_type": "qwen2",
        "hidden_size": hidden_size,
        "intermediate_size": hidden_size * 2,
        "num_hidden_layers": num_layers,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "rms_norm_eps": 1e-6,
        "vocab_size": model_vocab,
        "max_position_embeddings": 2048,
        "rope_theta": 10000.0,
        "tie_word_embeddings": True,
        "torch_dtype": "float32",
    }
    config = {k: v for k, v in config.items() if v is not None}
    mx.random.seed(seed)
    model = qwen2.Model(qwen2.ModelArgs.from_dict(config))
    if train_steps:
        _train(model, out, train_steps)
    mx.eval(model.parameters())
    weights = dict(tree_flatten(model.parameters()))
    mx.save_safetensors(str(out / "model.safetensors"), weights, metadata={"format": "mlx"})
    (out / "config.json").write_text(json.dumps(config, indent=2))
    return out


def _train(model: object, out: Path, steps: int) -> None:
    from jinja2 import Template
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(out / "tokenizer.json"))
    template = Template(CHAT_TEMPLATE)
    end = tok.token_to_id("<|im_end|>")
    sequences = []
    for prompt, reply in SCRIPT:
        text = template.render(messages=[{"role": "user", "content": prompt}], add_generation_prompt=True)
        prompt_ids = tok.encode(text).ids
        sequences.append((len(prompt_ids), [*prompt_ids, *tok.encode(reply).ids, end]))
    _fit(model, sequences, tok.token_to_id("<|endoftext|>"), steps)


def _fit(model: Any, sequences: list[tuple[int, list[int]]], pad: int, steps: int) -> None:
    """Train ``model`` in place on (prompt length, token ids) pairs, learning the replies only."""
    import mlx.core as mx
    import mlx.nn as nn
    import mlx.optimizers as optim

    width = max(len(ids) for _, ids in sequences)
    batch = mx.array([ids + [pad] * (width - len(ids)) for _, ids in sequences])
    # Position i predicts token i + 1: learn from the last prompt token to the end token.
    mask = mx.array(
        [[1 if p - 1 <= i < len(ids) - 1 else 0 for i in range(width - 1)] for p, ids in sequences]
    )

    def loss_fn(m: nn.Module) -> mx.array:
        losses = nn.losses.cross_entropy(m(batch[:, :-1]), batch[:, 1:]) * mask
        return losses.sum() / mask.sum()

    opt = optim.Adam(learning_rate=3e-3)
    step = nn.value_and_grad(model, loss_fn)
    for _ in range(steps):
        loss, grads = step(model)
        opt.update(model, grads)
        mx.eval(model.parameters(), opt.state, loss)


# A Qwen3-style template: tools in a system block, calls in <tool_call> tags, <think> reasoning,
# and enable_thinking=False closing an empty block in the prompt.
AGENT_TEMPLATE = (
    "{%- if tools %}<|im_start|>system\n<tools>\n{% for tool in tools %}{{ tool | tojson }}\n{% endfor %}"
    "</tools><|im_end|>\n{% endif %}"
    "{%- for message in messages %}"
    "{%- if message.role == 'assistant' %}<|im_start|>assistant\n"
    "{%- if message.reasoning_content %}<think>\n{{ message.reasoning_content }}\n</think>\n\n{% endif %}"
    "{{- message.content }}"
    "{%- for tc in message.tool_calls or [] %}<tool_call>\n"
    '{"name": "{{ tc.function.name }}", "arguments": {{ tc.function.arguments | tojson }}}\n</tool_call>'
    "{%- endfor %}<|im_end|>\n"
    "{%- elif message.role == 'tool' %}<|im_start|>user\n<tool_response>\n{{ message.content }}\n"
    "</tool_response><|im_end|>\n"
    "{%- else %}<|im_start|>{{ message.role }}\n{{ message.content }}<|im_end|>\n{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}<|im_start|>assistant\n"
    "{%- if enable_thinking is defined and enable_thinking is false %}<think>\n\n</think>\n\n{% endif %}"
    "{%- endif %}"
)

# The same without reasoning: a model that can only call tools or answer.
TOOLS_TEMPLATE = AGENT_TEMPLATE.replace(
    "{%- if message.reasoning_content %}<think>\n{{ message.reasoning_content }}\n</think>\n\n{% endif %}", ""
).replace(
    "{%- if enable_thinking is defined and enable_thinking is false %}<think>\n\n</think>\n\n{% endif %}", ""
)


def with_template(source: Path, out: Path, template: str) -> Path:
    """``source`` (weights linked, not copied) with ``template`` as its chat template."""
    out.mkdir(parents=True)
    for file in source.iterdir():
        if file.name != "tokenizer_config.json":
            (out / file.name).symlink_to(file)
    config = json.loads((source / "tokenizer_config.json").read_text())
    (out / "tokenizer_config.json").write_text(json.dumps(config | {"chat_template": template}, indent=2))
    return out


# What the official client sends for a documented ``get_weather(city: str)`` Python function.
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather for a city.",
        "parameters": {
            "type": "object",
            "required": ["city"],
            "properties": {"city": {"type": "string", "description": "The name of the city"}},
        },
    },
}

PARIS_CALL = {"function": {"name": "get_weather", "arguments": {"city": "Paris"}}}
ASK_PARIS = {"role": "user", "content": "What is the weather in Paris?"}
ASK_SKY = {"role": "user", "content": "Why is the sky blue?"}
ASK_OSLO = {"role": "user", "content": "Weather in Oslo?"}

# (messages, tools, enable_thinking, reply) turns the agent model memorises.
AGENT_SCRIPT: list[tuple[list[dict[str, object]], list[dict[str, object]], bool | None, str]] = [
    (
        [ASK_PARIS],
        [WEATHER_TOOL],
        None,
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>',
    ),
    (
        [
            ASK_PARIS,
            {"role": "assistant", "content": "", "tool_calls": [PARIS_CALL]},
            {"role": "tool", "content": "22 degrees and sunny"},
        ],
        [WEATHER_TOOL],
        None,
        "It is 22 degrees and sunny in Paris.",
    ),
    ([ASK_SKY], [], None, "<think>\nLight scatters off air.\n</think>\n\nBecause of Rayleigh scattering."),
    ([ASK_SKY], [], False, "Rayleigh scattering."),
    (
        [ASK_OSLO],
        [WEATHER_TOOL],
        None,
        '<think>\nI need the weather tool.\n</think>\n\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo"}}\n</tool_call>',
    ),
]


def build_agent_model(out: Path, *, train_steps: int = 300) -> Path:
    """A tiny model with tool and thinking support, trained on :data:`AGENT_SCRIPT`."""
    import mlx.core as mx
    from mlx.utils import tree_flatten
    from mlx_lm.models import qwen2
    from transformers import PreTrainedTokenizerFast

    scripted = [json.dumps(WEATHER_TOOL)] + [str(m.get("content")) for t in AGENT_SCRIPT for m in t[0]]
    scripted += [t[3] for t in AGENT_SCRIPT]
    markers = (
        "<think>",
        "</think>",
        "<tool_call>",
        "</tool_call>",
        "<tools>",
        "</tools>",
        "<tool_response>",
        "</tool_response>",
    )
    build_model(
        out,
        vocab_size=1024,
        corpus_lines=2000,
        hidden_size=64,
        seed=4,
        extra_corpus=scripted * 50,
        template=AGENT_TEMPLATE,
        markers=markers,
    )
    hf = PreTrainedTokenizerFast.from_pretrained(str(out))
    end = hf.convert_tokens_to_ids("<|im_end|>")
    sequences = []
    for messages, tools, think, reply in AGENT_SCRIPT:
        extra = {} if think is None else {"enable_thinking": think}
        prompt = hf.apply_chat_template(
            [_template_message(m) for m in messages],
            tools=tools or None,
            add_generation_prompt=True,
            tokenize=False,
            **extra,
        )
        ids = [*hf.encode(prompt + reply, add_special_tokens=False), end]
        sequences.append((len(hf.encode(prompt, add_special_tokens=False)), ids))
    model_config = json.loads((out / "config.json").read_text())
    model = qwen2.Model(qwen2.ModelArgs.from_dict(model_config))
    model.load_weights(str(out / "model.safetensors"))
    _fit(model, sequences, hf.convert_tokens_to_ids("<|endoftext|>"), train_steps)
    mx.save_safetensors(
        str(out / "model.safetensors"), dict(tree_flatten(model.parameters())), metadata={"format": "mlx"}
    )
    return out


def _template_message(message: dict[str, object]) -> dict[str, object]:
    calls = message.get("tool_calls")
    if isinstance(calls, list):
        return message | {"tool_calls": [{"type": "function", **c} for c in calls]}
    return message
