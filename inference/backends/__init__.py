"""Backends: what runs a model (MLX, llama.cpp, and a scripted fake for tests), behind one seam."""
