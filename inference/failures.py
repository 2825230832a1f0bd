"""What went wrong, as the engine and the store say it: a kind, never an HTTP status.

The HTTP layer maps each kind to a status in one place (``app/protocol/errors.py``)."""

from __future__ import annotations

import enum


class FailureKind(enum.Enum):
    """Why a job or a store operation failed."""

    INVALID_REQUEST = "invalid request"  # cannot run as asked: prompt too long, format not enforceable
    NOT_FOUND = "not found"  # the model or file asked for does not exist (locally or on the Hub)
    REJECTED_REPLY = "rejected reply"  # the reply broke its format or tool schema (partial kept)
    OUT_OF_MEMORY = "out of memory"  # loading or running ran out of memory: retry later or smaller
    UNAVAILABLE = "unavailable"  # the model cannot run now (a rank of its distributed group was lost)
    UPSTREAM = "upstream"  # the Hub failed, could not be reached, or sent corrupt data
    NO_SPACE = "no space"  # the disk cannot hold the download
    INTERNAL = "internal"  # a backend or engine error
