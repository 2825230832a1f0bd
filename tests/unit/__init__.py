"""Pure tests: parsers, grammars, schemas and helpers, with no server, engine or model."""
