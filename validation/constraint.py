"""Grammar constraints for decoding: per-request token masks from llguidance, backend-neutral.

A backend builds one :class:`GrammarCache` per loaded model (it owns the model's llguidance
tokenizer) and asks it for a :class:`TokenConstraint` per request. The constraint is fed the tokens
the model sampled and answers with a boolean mask of the ids allowed next, as a NumPy array the
size of the model's vocabulary (padding ids beyond the tokenizer's are always disallowed). How the
mask is applied to logits is the backend's business.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import numpy as np
from llguidance import LLMatcher, LLTokenizer
from llguidance.numpy import allocate_token_bitmask, fill_next_token_bitmask
from numpy.typing import NDArray


class ConstraintError(RuntimeError):
    """The grammar rejected the decoding state (should not happen under its own mask)."""


class TokenConstraint:
    """One request's grammar state."""

    def __init__(self, matcher: LLMatcher, n_vocab: int, eos: Sequence[int]) -> None:
        self._matcher = matcher
        self._n_vocab = n_vocab
        self._bitmask = allocate_token_bitmask(1, n_vocab)
        bits = np.zeros(self._bitmask.size * 32, dtype=np.uint8)
        bits[list(eos)] = 1
        self._eos_only = np.packbits(bits, bitorder="little").view(np.int32).reshape(1, -1)

    def consume(self, tokens: Sequence[int]) -> None:
        """Advance past ``tokens``, ignoring anything after the grammar has finished."""
        for token in tokens:
            if self._matcher.is_stopped():
                return
            self._matcher.consume_token(token)
            if self._matcher.is_error():
                raise ConstraintError(self._matcher.get_error())

    @property
    def finished(self) -> bool:
        """The output is complete: only an end token may follow."""
        return self._matcher.is_stopped()

    def bitmask(self) -> NDArray[np.int32]:
        """The ids allowed next as llguidance's packed bitmask, shape (1, ceil(vocab / 32)).

        After the end, only the end tokens are allowed.
        """
        if self._matcher.is_stopped():
            return self._eos_only
        fill_next_token_bitmask(self._matcher, self._bitmask)
        if self._matcher.is_error():
            raise ConstraintError(self._matcher.get_error())
        return self._bitmask

    def allowed(self) -> NDArray[np.bool_]:
        """:meth:`bitmask` unpacked to one boolean per token id."""
        bits = np.unpackbits(self.bitmask()[0].view(np.uint8), bitorder="little")
        return bits[: self._n_vocab].astype(bool)


class GrammarCache:
    """A model's llguidance tokenizer and its compiled grammars (least recently used kept)."""

    def __init__(self, tokenizer: LLTokenizer, n_vocab: int, eos: Sequence[int], size: int = 64) -> None:
        self._tokenizer = tokenizer
        self._n_vocab = n_vocab
        self._eos = list(eos)
        self._size = size
        self._compiled: OrderedDict[str, LLMatcher] = OrderedDict()

    def constraint(self, grammar: str) -> TokenConstraint:
        """A fresh constraint for ``grammar``; compiling happens once per grammar."""
        pristine = self._compiled.get(grammar)
        if pristine is None:
            pristine = LLMatcher(self._tokenizer, grammar, log_level=0)
            if pristine.is_error():
                raise ConstraintError(pristine.get_error())
            self._compiled[grammar] = pristine
            if len(self._compiled) > self._size:
                self._compiled.popitem(last=False)
        else:
            self._compiled.move_to_end(grammar)
        return TokenConstraint(pristine.deep_copy(), self._n_vocab, self._eos)

    def __len__(self) -> int:
        return len(self._compiled)
