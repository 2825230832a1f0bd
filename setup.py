"""Builds the one native piece, the OpenBLAS shim for MLX on Linux, at install time.

Everything else is declared in pyproject.toml. The shim links against nothing; where no compiler
exists the build goes on without it and ``blas_shim.py`` compiles it at run time, or MLX keeps
its reference BLAS."""

import sys

from setuptools import Extension, setup

SHIM = Extension(
    "inference.backends.mlx._sgemm_shim",
    sources=["inference/backends/mlx/sgemm_shim.c"],
    extra_compile_args=["-O2"],
    libraries=["dl"],
    optional=True,  # no compiler: install anyway
)

setup(ext_modules=[SHIM] if sys.platform.startswith("linux") else [])
