"""Validation: request shape checks, and later schemas, constrained decoding and output parsers."""
