"""Reading a GGUF file's header: its metadata and tensor shapes, without the weights.

Listing and ``/api/show`` describe GGUF models through this reader, so they work whether or not
llama.cpp is installed. Only the header is read: metadata values (large arrays such as the
vocabulary are skipped, keeping their length) and each tensor's shape and type.
See https://github.com/ggml-org/ggml/blob/master/docs/gguf.md for the layout.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

MAGIC = b"GGUF"
ARRAY_KEEP = 64  # arrays longer than this are summarised by their length

# GGUF metadata value types -> struct format (8: string, 9: array are handled apart).
_SCALARS = {
    0: "<B",
    1: "<b",
    2: "<H",
    3: "<h",
    4: "<I",
    5: "<i",
    6: "<f",
    7: "<?",
    10: "<Q",
    11: "<q",
    12: "<d",
}

# llama.cpp's ``general.file_type`` values (enum llama_ftype) as Ollama names them.
FILE_TYPES = {
    0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 7: "Q8_0", 8: "Q5_0", 9: "Q5_1", 10: "Q2_K",
    11: "Q3_K_S", 12: "Q3_K_M", 13: "Q3_K_L", 14: "Q4_K_S", 15: "Q4_K_M", 16: "Q5_K_S",
    17: "Q5_K_M", 18: "Q6_K", 19: "IQ2_XXS", 20: "IQ2_XS", 21: "Q2_K_S", 22: "IQ3_XS",
    23: "IQ3_XXS", 24: "IQ1_S", 25: "IQ4_NL", 26: "IQ3_S", 27: "IQ3_M", 28: "IQ2_S", 29: "IQ2_M",
    30: "IQ4_XS", 31: "IQ1_M", 32: "BF16", 36: "TQ1_0", 37: "TQ2_0", 38: "MXFP4",
}  # fmt: skip


class GGUFError(ValueError):
    """The file is not a GGUF file this reader understands."""


@dataclass(frozen=True)
class ArraySummary:
    """A long metadata array, kept only as its element type and length."""

    type: int
    length: int


@dataclass
class GGUFHeader:
    """What a GGUF file says about itself."""

    version: int
    metadata: dict[str, object] = field(default_factory=dict)
    tensors: dict[str, tuple[tuple[int, ...], int]] = field(default_factory=dict)  # shape, ggml type

    @property
    def architecture(self) -> str:
        return str(self.metadata.get("general.architecture", "unknown"))

    def arch_value(self, key: str) -> object:
        """``{architecture}.{key}``, e.g. ``context_length``."""
        return self.metadata.get(f"{self.architecture}.{key}")

    @property
    def parameter_count(self) -> int:
        total = 0
        for shape, _ in self.tensors.values():
            count = 1
            for dim in shape:
                count *= dim
            total += count
        return total

    @property
    def quantization(self) -> str:
        file_type = self.metadata.get("general.file_type")
        if isinstance(file_type, int) and file_type in FILE_TYPES:
            return FILE_TYPES[file_type]
        return "unknown"


def is_gguf(path: Path) -> bool:
    """Whether ``path`` is a file starting with the GGUF magic (cheap: reads four bytes)."""
    try:
        with path.open("rb") as file:
            return file.read(4) == MAGIC
    except OSError:
        return False


def read_header(path: Path) -> GGUFHeader:
    """Parse the header of the GGUF file at ``path``; raises :class:`GGUFError` or ``OSError``."""
    with path.open("rb") as file:
        if file.read(4) != MAGIC:
            raise GGUFError(f"{path.name} is not a GGUF file")
        (version,) = _unpack(file, "<I")
        if version not in (2, 3):
            raise GGUFError(f"{path.name}: GGUF version {version} is not supported")
        tensor_count, kv_count = _unpack(file, "<QQ")
        if tensor_count > 1 << 20 or kv_count > 1 << 20:
            raise GGUFError(f"{path.name}: implausible GGUF header")
        header = GGUFHeader(version)
        for _ in range(kv_count):
            key = _string(file)
            (kind,) = _unpack(file, "<I")
            header.metadata[key] = _value(file, kind)
        for _ in range(tensor_count):
            name = _string(file)
            (dims,) = _unpack(file, "<I")
            if dims > 8:
                raise GGUFError(f"{path.name}: tensor {name} has {dims} dimensions")
            shape = _unpack(file, f"<{dims}Q") if dims else ()
            ggml_type, _offset = _unpack(file, "<IQ")
            header.tensors[name] = (tuple(int(d) for d in shape), int(ggml_type))
        return header


def _unpack(file: BinaryIO, fmt: str) -> tuple[int, ...]:
    size = struct.calcsize(fmt)
    data = file.read(size)
    if len(data) != size:
        raise GGUFError("truncated GGUF header")
    values: tuple[int, ...] = struct.unpack(fmt, data)
    return values


def _string(file: BinaryIO) -> str:
    (length,) = _unpack(file, "<Q")
    if length > 1 << 26:
        raise GGUFError("implausible string length in GGUF header")
    data = file.read(length)
    if len(data) != length:
        raise GGUFError("truncated GGUF header")
    return data.decode("utf-8", errors="replace")


def _value(file: BinaryIO, kind: int) -> object:
    if kind == 8:
        return _string(file)
    if kind == 9:
        item_kind, length = _unpack(file, "<IQ")
        if length <= ARRAY_KEEP:
            return [_value(file, item_kind) for _ in range(length)]
        if item_kind == 8:
            for _ in range(length):
                (size,) = _unpack(file, "<Q")
                file.seek(size, 1)
        elif item_kind in _SCALARS:
            file.seek(struct.calcsize(_SCALARS[item_kind]) * length, 1)
        else:
            raise GGUFError(f"unsupported GGUF array of type {item_kind}")
        return ArraySummary(item_kind, length)
    fmt = _SCALARS.get(kind)
    if fmt is None:
        raise GGUFError(f"unknown GGUF value type {kind}")
    value = _unpack(file, fmt)[0]
    return bool(value) if kind == 7 else value
