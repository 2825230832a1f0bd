"""Real models: tiny MLX models trained by the fixtures, and the same models as GGUF on llama.cpp."""
