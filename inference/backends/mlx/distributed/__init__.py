"""Serving one model across several machines with MLX's distributed backend (``mlx.core.distributed``)."""
