"""Vision-language models on MLX, through ``mlx-vlm`` (Qwen2-VL / Qwen2.5-VL, Gemma 3, LLaVA, ...).

``mlx_vlm.load`` gives the model (a vision tower, a projector and a language model) and the
checkpoint's processor, which turns a rendered prompt and its images into token ids (each image's
placeholder expanded to as many tokens as its features fill) and pixel arrays. The model's chat
template places the placeholders: a message's images are image content parts
(:func:`inference.backends.chat_template.template_message`).

A sequence goes through three phases, one batch step at a time, so the engine can drop it
between any two (a client that leaves while its image is encoded costs at most that step):

1. the images are encoded and merged into the prompt's input embeddings (``get_input_embeddings``:
   the vision tower's forward pass), a step of its own;
2. the prompt is read in chunks of ``prefill_chunk`` embeddings into the language model's KV cache;
3. tokens are decoded on :class:`~inference.backends.mlx.solo.SoloSequence` (the pipelined loop
   of ``mlx_lm.generate_step``), with the request's sampler, penalties and grammar mask.

Sequences of a vision model decode side by side, each with its own forward pass
(:class:`~inference.engine.batch.GeneratorBatch`): mlx-vlm's language models return their own
output type and keep per-sequence rotary state (Qwen2-VL's M-RoPE offsets) on the module, so they
cannot join mlx-lm's batch generator. That state is kept with each sequence and put back before
each of its forward passes (:class:`_RotaryState`).
"""

from __future__ import annotations

from collections.abc import Generator, Sequence
from pathlib import Path
from typing import Any

from inference.backends.base import GenerationCancelled, ModelInfo, ModelLoadError, SamplingParams, Step
from inference.backends.mlx.batch import make_sampler, token_step
from inference.backends.mlx.prompting import MlxPrompting
from inference.backends.mlx.solo import HandOver, SoloSequence
from inference.backends.model_kinds import GenerationOnly
from inference.engine.batch import Admission, GeneratorBatch
from validation.constraint import TokenConstraint
from validation.images import ImageProblem, decode_image

# Attributes where mlx-vlm's language models keep one sequence's rotary positions between calls.
_ROTARY_STATE = ("_rope_deltas", "_position_ids")


class _RotaryState:
    """One sequence's share of the language model's per-sequence state: put back on entry,
    taken again on exit (the forward passes of several sequences interleave)."""

    def __init__(self, language_model: Any) -> None:
        self._lm = language_model
        self._names = [name for name in _ROTARY_STATE if hasattr(language_model, name)]
        self._values: dict[str, Any] = dict.fromkeys(self._names)

    def __enter__(self) -> None:
        for name in self._names:
            setattr(self._lm, name, self._values[name])

    def __exit__(self, *_: object) -> None:
        for name in self._names:
            self._values[name] = getattr(self._lm, name)


class _LanguageStep:
    """The language model as :class:`SoloSequence` calls a model: token ids and a cache in,
    logits out, inside the sequence's rotary state."""

    def __init__(self, language_model: Any, state: _RotaryState) -> None:
        self._lm = language_model
        self._state = state

    def __call__(self, inputs: Any, cache: Any = None) -> Any:
        with self._state:
            return self._lm(inputs, cache=cache).logits

    def make_cache(self) -> list[Any]:
        from mlx_vlm.models.cache import make_prompt_cache

        return list(make_prompt_cache(self._lm))


class MlxVisionModel(MlxPrompting, GenerationOnly):
    """A model loaded with ``mlx_vlm.load``; see the module docstring."""

    max_sequences = 0

    def __init__(self, path: Path, info: ModelInfo) -> None:
        from mlx_lm.tokenizer_utils import load as load_tokenizer
        from mlx_vlm.utils import load

        self.info = info
        try:
            self._model: Any
            self._processor: Any
            self._model, self._processor = load(str(path))
            eos = getattr(self._model.config, "eos_token_id", None)
            eos_ids = [eos] if isinstance(eos, int) else list(eos or [])
            self._tokenizer = load_tokenizer(path, eos_token_ids=eos_ids or None)
        except Exception as error:  # mlx-vlm raises many kinds; all mean "unusable files"
            raise ModelLoadError(f"{type(error).__name__}: {error}") from error
        self._eos = set(self._tokenizer.eos_token_ids)
        self._grammars = None
        text_config = getattr(self._model.config, "text_config", None)
        vocab = getattr(text_config, "vocab_size", None) or info.extra.get("vocab_size")
        self._n_vocab = int(vocab) if isinstance(vocab, int) else len(self._tokenizer.vocab)

    def tokenize_with_images(self, text: str, images: Sequence[bytes]) -> tuple[list[int], object]:
        pictures = [decode_image(data, f"image {i}") for i, data in enumerate(images)]
        inputs = self._processor(text=[text], images=pictures, add_special_tokens=self._adds_special(text))
        ids = inputs["input_ids"]
        tokens = [int(t) for t in (ids.tolist() if hasattr(ids, "tolist") else ids)[0]]
        config = self._model.config
        placeholder = getattr(config, "image_token_id", None) or getattr(config, "image_token_index", None)
        if isinstance(placeholder, int) and placeholder not in tokens:
            raise ImageProblem(
                "the chat template placed none of the images in the prompt (no image token in it); "
                "this model's template does not read image parts"
            )
        media = {
            k: v for k, v in inputs.items() if k not in ("input_ids", "attention_mask") and v is not None
        }
        return tokens, media

    def open_batch(self) -> GeneratorBatch:
        return GeneratorBatch(self._generate)

    def _generate(self, admission: Admission) -> Generator[Step | None, None, None]:
        import mlx.core as mx
        from mlx_lm.generate import generation_stream
        from mlx_vlm.models.cache import make_prompt_cache

        params = admission.params
        prompt = list(admission.prompt)
        media: dict[str, Any] = dict(admission.media) if isinstance(admission.media, dict) else {}
        pixels = media.pop("pixel_values", None)
        lm = self._model.language_model
        state = _RotaryState(lm)
        ids = mx.array([prompt])
        with state, mx.stream(generation_stream):
            features = self._model.get_input_embeddings(ids, pixels, **media)
            embeds = features.inputs_embeds
            mx.eval(embeds)
        extra = {k: v for k, v in features.to_dict().items() if k != "inputs_embeds" and v is not None}
        if pixels is not None:
            yield None  # the images are encoded: that was this sequence's step
            if admission.should_stop():
                raise GenerationCancelled
        cache = list(make_prompt_cache(lm))
        chunk = max(params.prefill_chunk, 1)
        fed = 0
        while len(prompt) - fed > 1:
            n = min(chunk, len(prompt) - 1 - fed)
            with state, mx.stream(generation_stream):
                lm(ids[:, fed : fed + n], inputs_embeds=embeds[:, fed : fed + n], cache=cache, **extra)
                mx.eval([layer.state for layer in cache])
            fed += n
            if len(prompt) - fed > 1:
                yield None  # one chunk a step, as the text models prefill
                if admission.should_stop():
                    raise GenerationCancelled
        yield from self._decode(
            admission, HandOver(cache, prompt[:fed], prompt[fed:]), _LanguageStep(lm, state)
        )

    def _decode(
        self, admission: Admission, state: HandOver, model: _LanguageStep
    ) -> Generator[Step | None, None, None]:
        params: SamplingParams = admission.params
        constraint: TokenConstraint | None = admission.constraint
        solo = SoloSequence(
            model,
            state,
            sampler=make_sampler(params, self._n_vocab),
            processors=self.processors(params, constraint),
            prefill_chunk=params.prefill_chunk,
        )
        detokenizer = self._tokenizer.detokenizer
        while True:
            taken = solo.step()
            if taken is None:
                yield None
                continue
            token, logprobs = taken
            yield token_step(self._tokenizer, self._eos, detokenizer, token, logprobs, params.logprobs)

    def close(self) -> None:
        import gc

        from inference.backends.mlx.backend import free_cached_memory

        self._model = None
        self._processor = None
        self._grammars = None
        gc.collect()
        free_cached_memory()
