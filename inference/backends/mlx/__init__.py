"""The MLX backend: Hugging Face model directories run with ``mlx-lm`` (and a faster BLAS on Linux)."""
