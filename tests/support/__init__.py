"""Test helpers: tiny real models, a fake Hugging Face Hub, and client scripts run as subprocesses."""
