"""The HTTP layer: a Quart-Trio app that translates the Ollama API to and from the engine."""

__version__ = "0.1.0"  # the one version string: the package's (pyproject reads it), /api/version's, the CLI's
