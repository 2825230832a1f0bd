"""MLX's matrix products on NumPy's OpenBLAS (Linux): the shim is used, exact enough, and optional.

``tests/conftest.py`` installs the shim before anything imports MLX, as ``trillm serve`` does, so
every MLX test in the suite already runs on it; these tests prove that it is really in use.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from app.config import Settings
from inference.backends.mlx import blas_shim as mlx_blas

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the shim is for Linux")

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("rows", [1, 3, 4, 5, 37])
@pytest.mark.parametrize(("a_transposed", "b_transposed"), [(False, False), (False, True), (True, False)])
def test_mlx_float32_products_run_through_openblas(rows: int, a_transposed: bool, b_transposed: bool) -> None:
    """Every shape a model uses, on both paths (a few rows: sgemv per row; more: sgemm), stored
    plainly or transposed (as ``x @ w.T`` hands a weight to BLAS)."""
    import mlx.core as mx

    choice = mlx_blas.install()
    assert choice.fast, choice.describe()
    rng = np.random.default_rng(rows)
    a, b = rng.standard_normal((rows, 96), dtype=np.float32), rng.standard_normal((96, 40), dtype=np.float32)
    left = mx.array(a.T.copy()).T if a_transposed else mx.array(a)
    right = mx.array(b.T.copy()).T if b_transposed else mx.array(b)
    before = mlx_blas.sgemm_calls()
    assert before is not None
    product = left @ right
    mx.eval(product)
    after = mlx_blas.sgemm_calls()
    assert after is not None and after > before
    np.testing.assert_allclose(np.array(product), a @ b, rtol=1e-4, atol=1e-4)


def test_a_row_gets_the_same_bits_alone_or_beside_a_few_others() -> None:
    """Why a lone sequence and a small batch decode alike: up to GEMV_ROWS rows, row by row."""
    import mlx.core as mx

    rng = np.random.default_rng(7)
    weight = mx.array(rng.standard_normal((256, 128), dtype=np.float32))
    rows = mx.array(rng.standard_normal((mlx_blas.GEMV_ROWS, 128), dtype=np.float32))
    together = rows @ weight.T
    alone = rows[:1] @ weight.T
    mx.eval(together, alone)
    assert np.array_equal(np.array(together)[:1], np.array(alone))


def _child(code: str, env: dict[str, str]) -> str:
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_a_child_process_gets_the_shim_through_ld_preload() -> None:
    """How a benchmark puts mlx_lm.server on the same BLAS as trillm."""
    shim = mlx_blas.install().shim
    assert shim is not None
    code = (
        "import ctypes, mlx.core as mx\n"
        "mx.eval(mx.ones((4, 8)) @ mx.ones((8, 4)))\n"
        f"calls = ctypes.CDLL({str(shim)!r}).trillm_sgemm_calls\n"
        "calls.restype = ctypes.c_ulong\n"
        "print(calls())\n"
    )
    assert int(_child(code, mlx_blas.preload_env())) >= 1


def test_the_mlx_backend_installs_the_shim_as_its_first_model_loads(tiny_dir: Path) -> None:
    """How ``trillm serve`` gets it: nothing at start-up, the shim before the first MLX import."""
    code = (
        "import sys\n"
        "from pathlib import Path\n"
        "from inference.backends.mlx import blas_shim as mlx_blas\n"
        "from inference.backends.mlx.backend import MlxBackend, release_mlx_streams\n"
        "assert 'mlx.core' not in sys.modules\n"
        f"MlxBackend().load(Path({str(tiny_dir)!r}))\n"
        "print(mlx_blas.install().fast, mlx_blas.sgemm_calls() is not None)\n"
        "release_mlx_streams()\n"
    )
    assert _child(code, {"PATH": "/usr/bin:/bin"}) == "True True"


def test_too_late_or_turned_off_keeps_the_reference_blas_and_says_why() -> None:
    late = "import mlx.core\nfrom inference.backends.mlx import blas_shim as mlx_blas\nprint(mlx_blas.install().describe())"
    assert "imported before" in _child(late, {"PATH": "/usr/bin:/bin"})
    off = "from inference.backends.mlx import blas_shim as mlx_blas\nprint(mlx_blas.install(enabled=False).describe())"
    assert "TRILLM_MLX_OPENBLAS=0" in _child(off, {"PATH": "/usr/bin:/bin"})


def test_no_compiler_is_a_reason_not_a_crash(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CC", str(tmp_path / "no-such-cc"))
    with pytest.raises(RuntimeError, match="no C compiler"):
        mlx_blas.build_shim(cache=tmp_path)


def test_the_setting_reads_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings.from_env().mlx_openblas
    monkeypatch.setenv("TRILLM_MLX_OPENBLAS", "0")
    assert not Settings.from_env().mlx_openblas


def test_the_install_time_build_is_used_and_the_run_time_build_is_keyed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``pip install`` builds the shim beside its source; the run-time fallback's cache name
    changes with the compiler (and source and platform), so a stale copy is never loaded."""
    assert mlx_blas.prebuilt() is not None, "the install did not build the shim (setup.py)"
    assert mlx_blas.install().shim == mlx_blas.prebuilt()
    first = mlx_blas.build_shim(cache=tmp_path)
    assert first.parent == tmp_path and first.exists()
    assert mlx_blas.build_shim(cache=tmp_path) == first  # cached
    other = tmp_path / "bin" / "cc"
    other.parent.mkdir()
    other.symlink_to(shutil.which("cc") or "/usr/bin/cc")
    monkeypatch.setenv("CC", str(other))
    assert mlx_blas.build_shim(cache=tmp_path) != first


def test_the_log_says_openblas_only_when_mlx_products_reach_it() -> None:
    ok = (
        "from inference.backends.mlx import blas_shim as mlx_blas\n"
        "mlx_blas.install()\n"
        "print(mlx_blas.verify().describe())\n"
    )
    assert _child(ok, {"PATH": "/usr/bin:/bin"}).startswith("OpenBLAS (")
    # A shim whose counter MLX never moves (a second copy, loaded privately) must not pass.
    unreached = (
        "import ctypes, shutil, tempfile\n"
        "from inference.backends.mlx import blas_shim as mlx_blas\n"
        "shim = mlx_blas.install().shim\n"
        "copy = shutil.copy(shim, tempfile.mkdtemp() + '/copy.so')\n"
        "mlx_blas._handle = ctypes.CDLL(copy)\n"
        "mlx_blas._handle.trillm_sgemm_calls.restype = ctypes.c_ulong\n"
        "print(mlx_blas.verify().describe())\n"
    )
    said = _child(unreached, {"PATH": "/usr/bin:/bin"})
    assert said.startswith("reference BLAS") and "do not reach it" in said
