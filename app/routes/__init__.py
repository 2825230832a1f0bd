"""The HTTP routes: Ollama's `/api/*`, OpenAI's `/v1/*`, model management, probes and metrics."""
