"""The HTTP layer: a Quart-Trio app that translates the Ollama API to and from the engine."""
