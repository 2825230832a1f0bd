"""Fast matrix products for MLX on Linux CPUs: NumPy's OpenBLAS in place of reference BLAS.

MLX's Linux wheel (``mlx[cpu]``) computes float32 matrix products with ``cblas_sgemm`` from the
netlib reference BLAS it bundles: a plain loop at about 2.5 GFLOP/s, whatever the batch. NumPy,
which mlx-lm already depends on, bundles OpenBLAS, 30 to 80 times faster on the same products, but
under renamed symbols (``scipy_cblas_sgemm64_``: prefixed, 64-bit integers) so that it cannot
clash with other BLAS libraries.

:func:`install` bridges the two. ``sgemm_shim.c`` is a small shared library that defines
``cblas_sgemm`` and forwards every call to the OpenBLAS entry points it is bound to (products of
a few rows, a decode step's, as one ``sgemv`` per row). It links against nothing, so it is built
when trillm is installed (``setup.py``); where that copy is missing it is compiled at run time
with ``cc`` (or ``$CC``) into ``~/.cache/trillm/mlx-blas``, keyed by source, compiler and
platform. :func:`install` loads it into the process's global symbol scope before MLX is first
imported and binds it to NumPy's OpenBLAS. The dynamic linker searches that scope before MLX's
own dependencies, so MLX's matrix products run on OpenBLAS; nothing of MLX or NumPy is modified.
:func:`verify`, once MLX is imported, checks that a product really went through the shim, and
only then does the log say OpenBLAS. When anything is missing, MLX keeps its reference BLAS and
the log says why.

Only the process that calls :func:`install` before importing MLX gains; :func:`preload_env`
gives a child process (a benchmark's peer server) the same library through ``LD_PRELOAD``.
Elsewhere than Linux (macOS uses Accelerate and Metal) it does nothing.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

# Products with at most this many rows go row by row through sgemv: OpenBLAS's sgemm packs the
# whole right-hand matrix first, which costs 5-6 matrix-vector products on this machine.
GEMV_ROWS = 4

# The OpenBLAS entry points a NumPy wheel may carry, with whether their integers are 64-bit.
_CANDIDATES = (("scipy_cblas_sgemm64_", True), ("cblas_sgemm64_", True), ("scipy_cblas_sgemm", False))

SOURCE = Path(__file__).with_name("sgemm_shim.c")


@dataclass(frozen=True)
class BlasChoice:
    """What MLX's matrix products run on in this process, and the shim that routes them."""

    library: str  # "OpenBLAS (...)" or "reference BLAS"
    reason: str = ""  # why the reference BLAS stayed, when it did
    shim: Path | None = None

    @property
    def fast(self) -> bool:
        return self.shim is not None

    def describe(self) -> str:
        return self.library if self.fast else f"{self.library} ({self.reason})"


_installed: BlasChoice | None = None
_verified = False
_handle: ctypes.CDLL | None = None
log = logging.getLogger("trillm")


def install(enabled: bool = True) -> BlasChoice:
    """Route MLX's ``cblas_sgemm`` to NumPy's OpenBLAS in this process, once; see the module doc."""
    global _handle
    if _installed is not None:
        return _installed
    if not enabled:
        return _remember(BlasChoice("reference BLAS", "turned off with TRILLM_MLX_OPENBLAS=0"))
    if not sys.platform.startswith("linux"):
        return _remember(BlasChoice("MLX's own BLAS", "only Linux needs the OpenBLAS shim"))
    if "mlx.core" in sys.modules:
        return _remember(BlasChoice("reference BLAS", "MLX was imported before the OpenBLAS shim"))
    try:
        library, symbol, ilp64 = numpy_openblas()
        shim = build_shim()
        openblas = ctypes.CDLL(str(library))
        handle = ctypes.CDLL(str(shim), mode=os.RTLD_GLOBAL)
        handle.trillm_sgemm_calls.restype = ctypes.c_ulong
        handle.trillm_sgemm_bind.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int, ctypes.c_int]
        gemm = ctypes.cast(getattr(openblas, symbol), ctypes.c_void_p)
        gemv = ctypes.cast(getattr(openblas, symbol.replace("sgemm", "sgemv")), ctypes.c_void_p)
        handle.trillm_sgemm_bind(gemm, gemv, int(ilp64), GEMV_ROWS)
        _handle = handle
    except (ImportError, OSError, RuntimeError, AttributeError, subprocess.SubprocessError) as error:
        return _remember(BlasChoice("reference BLAS", str(error)))
    # Said once MLX is imported and verify() has seen a product go through the shim.
    return _remember(BlasChoice(f"OpenBLAS ({library.name}, NumPy's)", shim=shim), announce=False)


def verify() -> BlasChoice:
    """With MLX imported: check that a float32 product on the CPU really went through the shim
    (and came out right), then log what MLX's products run on. Once per process."""
    global _installed, _verified
    choice = install()
    if _verified or not choice.fast:
        return choice
    _verified = True
    import mlx.core as mx

    before = sgemm_calls() or 0
    product = mx.matmul(mx.ones((8, 16)), mx.ones((16, 8)), stream=mx.cpu)
    mx.eval(product)
    if (sgemm_calls() or 0) <= before:
        choice = BlasChoice(
            "reference BLAS", "the OpenBLAS shim is loaded but MLX's products do not reach it"
        )
    elif not bool(mx.all(product == 16.0).item()):
        choice = BlasChoice(
            "OpenBLAS, giving WRONG results", "report this; set TRILLM_MLX_OPENBLAS=0", choice.shim
        )
    return _remember(choice)


def _remember(choice: BlasChoice, *, announce: bool = True) -> BlasChoice:
    global _installed
    _installed = choice
    if announce:
        log.info("MLX matrix products: %s", choice.describe())
    return choice


def sgemm_calls() -> int | None:
    """How many float32 matrix products went through the shim so far (None: not installed)."""
    if _handle is None:
        return None
    return int(_handle.trillm_sgemm_calls())


def preload_env(env: dict[str, str] | None = None) -> dict[str, str]:
    """``env`` (default: this process's) plus ``LD_PRELOAD`` of the shim and the OpenBLAS entry
    points it binds itself to, for a child process that runs MLX; unchanged when there is no shim."""
    result = dict(os.environ if env is None else env)
    choice = _installed
    if choice is not None and choice.shim is not None:
        library, symbol, ilp64 = numpy_openblas()
        result["LD_PRELOAD"] = " ".join(filter(None, [str(choice.shim), result.get("LD_PRELOAD", "")]))
        result |= {
            "TRILLM_SGEMM_LIBRARY": str(library),
            "TRILLM_SGEMM_GEMM": symbol,
            "TRILLM_SGEMM_GEMV": symbol.replace("sgemm", "sgemv"),
            "TRILLM_SGEMM_ILP64": "1" if ilp64 else "0",
            "TRILLM_SGEMM_ROWS": str(GEMV_ROWS),
        }
    return result


def numpy_openblas() -> tuple[Path, str, bool]:
    """NumPy's bundled OpenBLAS: the library, its ``sgemm`` symbol (``sgemv`` is named alike),
    and whether it is ILP64."""
    import numpy

    libs = Path(numpy.__file__).resolve().parent.parent / "numpy.libs"
    for library in sorted(libs.glob("lib*openblas*.so*")):
        loaded = ctypes.CDLL(str(library))
        for symbol, ilp64 in _CANDIDATES:
            if hasattr(loaded, symbol) and hasattr(loaded, symbol.replace("sgemm", "sgemv")):
                return library, symbol, ilp64
    raise RuntimeError(f"no OpenBLAS with a known sgemm entry point in {libs}")


def prebuilt() -> Path | None:
    """The shim built when trillm was installed, if it was."""
    return next(iter(sorted(Path(__file__).parent.glob("_sgemm_shim*.so"))), None)


def build_shim(cache: Path | None = None) -> Path:
    """The shim library: the copy built at install time, else one compiled now into ``cache``
    (default ``~/.cache/trillm/mlx-blas``), keyed by source, compiler and platform."""
    if cache is None and (built := prebuilt()) is not None:
        return built
    compiler = shutil.which(os.environ.get("CC", "cc"))
    if compiler is None:
        raise RuntimeError("no C compiler (cc) to build the OpenBLAS shim")
    source = SOURCE.read_text()
    version = subprocess.run([compiler, "--version"], capture_output=True, text=True, timeout=30, check=False)
    identity = f"{source}\n{compiler}\n{version.stdout}\n{platform.machine()}\n{sys.platform}"
    key = hashlib.sha256(identity.encode()).hexdigest()[:16]
    root = cache or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "trillm" / "mlx-blas"
    shim = root / f"sgemm-{key}.so"
    if shim.exists():
        return shim
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=root) as work:
        built = Path(work) / shim.name
        command = [compiler, "-O2", "-shared", "-fPIC", str(SOURCE), "-o", str(built), "-ldl"]
        done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"building the OpenBLAS shim failed: {done.stderr.strip()[:300]}")
        built.replace(shim)  # atomic: a concurrent build never leaves half a library behind
    return shim
