"""Fast matrix products for MLX on Linux CPUs: NumPy's OpenBLAS in place of reference BLAS.

MLX's Linux wheel (``mlx[cpu]``) computes float32 matrix products with ``cblas_sgemm`` from the
netlib reference BLAS it bundles: a plain loop at about 2.5 GFLOP/s, whatever the batch. NumPy,
which mlx-lm already depends on, bundles OpenBLAS, 30 to 80 times faster on the same products, but
under renamed symbols (``scipy_cblas_sgemm64_``: prefixed, 64-bit integers) so that it cannot
clash with other BLAS libraries.

:func:`install` bridges the two. It compiles, once per NumPy build, a 30-line shared library
that defines ``cblas_sgemm`` and forwards every call to NumPy's OpenBLAS (products of a few rows,
a decode step's, as one ``sgemv`` per row), and loads it into the
process's global symbol scope before MLX is first imported. The dynamic linker searches that
scope before MLX's own dependencies, so MLX's matrix products run on OpenBLAS; nothing of MLX
or NumPy is modified. It needs a C compiler (``cc``, or ``$CC``) the first time; the library is
cached under ``~/.cache/trillm/mlx-blas``. When anything is missing, MLX keeps its reference
BLAS and :func:`install` says why.

Only the process that calls :func:`install` before importing MLX gains; :func:`preload_env`
gives a child process (a benchmark's peer server) the same library through ``LD_PRELOAD``.
Elsewhere than Linux (macOS uses Accelerate and Metal) it does nothing.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
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

_SOURCE = """\
#include <stdint.h>
#include <string.h>
typedef {int_type} blas_int;
enum {{ ROW_MAJOR = 101, NO_TRANS = 111 }};
extern void {gemm}(int, int, int, blas_int, blas_int, blas_int, float, const float *, blas_int,
                   const float *, blas_int, float, float *, blas_int);
extern void {gemv}(int, int, blas_int, blas_int, float, const float *, blas_int, const float *,
                   blas_int, float, float *, blas_int);
static unsigned long calls;
unsigned long trillm_sgemm_calls(void) {{ return __atomic_load_n(&calls, __ATOMIC_RELAXED); }}
void cblas_sgemm(int order, int trans_a, int trans_b, int m, int n, int k, float alpha,
                 const float *a, int lda, const float *b, int ldb, float beta, float *c, int ldc) {{
  __atomic_fetch_add(&calls, 1, __ATOMIC_RELAXED);
  if (order != ROW_MAJOR || m > {gemv_rows} || k == 0) {{
    {gemm}(order, trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
    return;
  }}
  /* A few rows (a decode step): one matrix-vector product per row of C, which reads B once per
     row instead of packing all of it, and gives each row the same result whatever M is. */
  for (int i = 0; i < m; i++) {{
    const float *x = trans_a == NO_TRANS ? a + (long)i * lda : a + i;
    blas_int incx = trans_a == NO_TRANS ? 1 : lda;
    float *y = c + (long)i * ldc;
    if (beta == 0.0f) memset(y, 0, sizeof(float) * (size_t)n); /* C may hold garbage, even NaN */
    if (trans_b == NO_TRANS)  /* B is K x N: y = B^T x */
      {gemv}(ROW_MAJOR, NO_TRANS + 1, k, n, alpha, b, ldb, x, incx, beta, y, 1);
    else  /* B is N x K: y = B x */
      {gemv}(ROW_MAJOR, NO_TRANS, n, k, alpha, b, ldb, x, incx, beta, y, 1);
  }}
}}
"""


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
        shim, library = build_shim()
        _handle = ctypes.CDLL(str(shim), mode=os.RTLD_GLOBAL)
        _handle.trillm_sgemm_calls.restype = ctypes.c_ulong
    except (ImportError, OSError, RuntimeError, subprocess.SubprocessError) as error:
        return _remember(BlasChoice("reference BLAS", str(error)))
    return _remember(BlasChoice(f"OpenBLAS ({library.name}, NumPy's)", shim=shim))


def _remember(choice: BlasChoice) -> BlasChoice:
    global _installed
    _installed = choice
    log.info("MLX matrix products: %s", choice.describe())
    return choice


def sgemm_calls() -> int | None:
    """How many float32 matrix products went through the shim so far (None: not installed)."""
    if _handle is None:
        return None
    return int(_handle.trillm_sgemm_calls())


def preload_env(env: dict[str, str] | None = None) -> dict[str, str]:
    """``env`` (default: this process's) plus ``LD_PRELOAD`` of the shim, for a child process
    that runs MLX; unchanged when there is no shim."""
    result = dict(os.environ if env is None else env)
    choice = _installed
    if choice is not None and choice.shim is not None:
        result["LD_PRELOAD"] = " ".join(filter(None, [str(choice.shim), result.get("LD_PRELOAD", "")]))
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


def build_shim(cache: Path | None = None) -> tuple[Path, Path]:
    """The shim for this NumPy's OpenBLAS, compiled on first use; returns (shim, OpenBLAS)."""
    library, symbol, ilp64 = numpy_openblas()
    source = _SOURCE.format(
        gemm=symbol,
        gemv=symbol.replace("sgemm", "sgemv"),
        gemv_rows=GEMV_ROWS,
        int_type="int64_t" if ilp64 else "int32_t",
    )
    key = hashlib.sha256(f"{library}\n{source}".encode()).hexdigest()[:16]
    root = cache or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "trillm" / "mlx-blas"
    shim = root / f"sgemm-{key}.so"
    if shim.exists():
        return shim, library
    compiler = shutil.which(os.environ.get("CC", "cc"))
    if compiler is None:
        raise RuntimeError("no C compiler (cc) to build the OpenBLAS shim")
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=root) as work:
        c_file = Path(work) / "shim.c"
        c_file.write_text(source)
        built = Path(work) / shim.name
        command = [compiler, "-O2", "-shared", "-fPIC", str(c_file), "-o", str(built)]
        command += [f"-L{library.parent}", f"-l:{library.name}", f"-Wl,-rpath,{library.parent}"]
        done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"building the OpenBLAS shim failed: {done.stderr.strip()[:300]}")
        built.replace(shim)  # atomic: a concurrent build never leaves half a library behind
    return shim, library
