"""The text side every MLX generation model shares: chat templates, tokenizing, the grammar mask.

Text models (``mlx_lm.load``) and vision models (``mlx_vlm.load``) both hold an mlx-lm
``TokenizerWrapper`` over the checkpoint's Hugging Face tokenizer; :class:`MlxPrompting` renders
conversations through its chat template, tokenizes the prompt, and builds the llguidance
constraint of structured output over its vocabulary. :func:`mask_processor` applies that
constraint as an mlx-lm logits processor.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from inference.backends.base import SamplingParams
from inference.backends.chat_template import template_message
from inference.backends.mlx.batch import make_processors
from validation.constraint import GrammarCache, TokenConstraint


def mask_processor(constraint: TokenConstraint) -> Callable[[Any, Any], Any]:
    """An mlx-lm logits processor applying ``constraint``'s mask (NumPy mask, MLX ``where``).

    mlx-lm passes the whole history; the first call holds only the prompt, later calls add the
    sampled tokens, which the constraint consumes. mlx-lm computes one step past the end token,
    and the constraint tolerates that (after the end it allows only end tokens).

    The step's forward pass is started (``async_eval``) before the mask is computed, so the model
    runs while llguidance works out the mask on this thread, instead of one after the other.
    """
    import mlx.core as mx

    seen: int | None = None
    # On Apple Silicon llguidance applies the packed mask with a Metal kernel; elsewhere NumPy
    # unpacks it and MLX selects.
    metal = mx.metal.is_available()
    if metal:
        from llguidance.mlx import apply_token_bitmask

    def process(tokens: Any, logits: Any) -> Any:
        nonlocal seen
        mx.async_eval(logits)  # type: ignore[no-untyped-call]
        length = int(tokens.shape[0])
        if seen is not None and length > seen:
            constraint.consume(tokens[seen:].tolist())
        seen = length
        if metal:
            return apply_token_bitmask(logits, constraint.bitmask())
        return mx.where(mx.array(constraint.allowed()), logits, -mx.inf)

    return process


class MlxPrompting:
    """Chat templates, tokenizing and constraints over ``self._tokenizer`` (an mlx-lm
    ``TokenizerWrapper``), with ``self._eos`` its end tokens and ``self._n_vocab`` the model's
    vocabulary (the logits' width, which may pass the tokenizer's)."""

    _tokenizer: Any
    _eos: set[int]
    _n_vocab: int
    _grammars: GrammarCache | None

    def single_tokens(self, texts: Sequence[str]) -> dict[str, int]:
        added: dict[str, int] = self._tokenizer._tokenizer.get_added_vocab()
        return {t: added[t] for t in texts if t in added}

    def constraint(self, grammar: str) -> TokenConstraint:
        if self._grammars is None:
            # Building llguidance's tokenizer costs ~1 s at a 150k vocabulary: once per model.
            from llguidance.hf import from_tokenizer

            n_vocab = self._n_vocab
            tokenizer = from_tokenizer(
                self._tokenizer._tokenizer, n_vocab=n_vocab, eos_token=sorted(self._eos)
            )
            self._grammars = GrammarCache(tokenizer, n_vocab, sorted(self._eos))
        return self._grammars.constraint(grammar)

    def render_chat(
        self,
        messages: Sequence[dict[str, object]],
        *,
        tools: Sequence[dict[str, object]] = (),
        think: bool | None = None,
        template: str | None = None,
    ) -> str:
        if template is None and self._tokenizer.chat_template is None:
            # No template: plain concatenation, as mlx-lm does for base models.
            return "".join(str(m.get("content", "")) for m in messages)
        extra: dict[str, Any] = {}
        if tools:
            extra["tools"] = list(tools)
        if think is not None:
            extra["enable_thinking"] = think
        if template is not None:
            extra["chat_template"] = template
        rendered: str = self._tokenizer.apply_chat_template(
            [template_message(m) for m in messages], add_generation_prompt=True, tokenize=False, **extra
        )
        return rendered

    def tokenize(self, text: str) -> list[int]:
        ids: list[int] = self._tokenizer.encode(text, add_special_tokens=self._adds_special(text))
        return ids

    def _adds_special(self, text: str) -> bool:
        """Whether tokenizing ``text`` adds the BOS token (not when the template wrote it)."""
        bos = self._tokenizer.bos_token
        return bos is None or not text.startswith(bos)

    def processors(self, params: SamplingParams, constraint: TokenConstraint | None) -> list[Any]:
        """One sequence's logits processors: its penalties, then its grammar mask."""
        return make_processors(params, None if constraint is None else mask_processor(constraint))
