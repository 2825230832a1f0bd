"""The model store: names, manifests, the files on disk, pulls from the Hub and existing Ollama stores."""
