"""The llama.cpp backend: GGUF models run with ``llama-cpp-python``, with continuous batching."""
