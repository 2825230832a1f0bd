"""Keeping the garbage collector's full passes short, so they do not pause the streams.

A full collection walks every object the process tracks, and every thread waits for it. Once
mlx-lm, transformers and a tokenizer are imported that is hundreds of thousands of objects: a
full pass measured 0.3 s with the server's imports and 0.5 s once ``mlx-embeddings`` is loaded,
and each one is a gap of that length in every stream. Almost all of those objects live as long as
the process (modules, classes, a loaded model's tokenizer), so they are moved out of the
collector's sight (``gc.freeze``) when the engine starts and after every load; an unload puts
them back (``gc.unfreeze``), so that what the unloaded model leaves in reference cycles is freed
by the next full pass; when other models stay loaded, that pass runs at once and what survives
is frozen again (one pause at the unload, as a load pauses, instead of one at every full pass).
"""

from __future__ import annotations

import gc


def freeze() -> None:
    """Everything alive now is left out of later collections (cheap: no pass runs)."""
    gc.freeze()


def thaw() -> None:
    """Put the frozen objects back under the collector (after an unload)."""
    gc.unfreeze()


def settle() -> None:
    """Collect everything now, then freeze what survives (one full pass)."""
    gc.collect()
    gc.freeze()
