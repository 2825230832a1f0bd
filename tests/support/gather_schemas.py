"""Write the real-world schema corpus under ``tests/data/schemas/`` (run by hand, not by the tests).

    python -m tests.support.gather_schemas

Three kinds, one JSON file each (``{"source": ..., "schema": ...}``):

- API payloads: the JSON Schemas of a spread of the ``openai`` package's request and response
  models (what pydantic generates for them: ``$defs``, Literal enums, unions, nested models), the
  largest ones included;
- the JSON Schema meta-schemas that ``jsonschema`` ships (recursive, ``$dynamicRef``, vocabularies);
- hand-written ones in the shapes of configuration files, Kubernetes resources and function-calling
  tools (:mod:`tests.support.hand_schemas`), with ``oneOf``, ``dependencies``, ``uniqueItems``,
  formats, ``patternProperties`` and recursion.
"""

from __future__ import annotations

import importlib
import inspect
import json
import pkgutil
import re
from pathlib import Path
from typing import Any

OUT = Path(__file__).resolve().parents[1] / "data" / "schemas"
API_SAMPLE = 110


def api_payloads() -> dict[str, dict[str, Any]]:
    import openai.types
    from pydantic import BaseModel

    found: dict[str, dict[str, Any]] = {}
    for info in pkgutil.walk_packages(openai.types.__path__, "openai.types."):
        try:
            module = importlib.import_module(info.name)
        except Exception:
            continue
        for name, cls in inspect.getmembers(module, inspect.isclass):
            if not issubclass(cls, BaseModel) or cls.__module__ != module.__name__:
                continue
            try:
                schema = cls.model_json_schema()
            except Exception:
                continue
            found[f"{cls.__module__}.{name}"] = schema
    # A spread: every size, from one-field models to ones with dozens of definitions.
    ordered = sorted(found.items(), key=lambda item: (len(json.dumps(item[1])), item[0]))
    step = max(1, len(ordered) // API_SAMPLE)
    return dict(ordered[::step][:API_SAMPLE] + ordered[-5:])


def meta_schemas() -> dict[str, dict[str, Any]]:
    from jsonschema_specifications import REGISTRY

    out = {}
    for uri in sorted(REGISTRY):
        contents = REGISTRY.contents(uri)
        if isinstance(contents, dict):
            out[uri] = contents
    return out


def write(kind: str, source: str, schema: dict[str, Any]) -> None:
    name = re.sub(r"[^A-Za-z0-9]+", "-", source).strip("-").lower()[-80:]
    (OUT / f"{kind}--{name}.json").write_text(
        json.dumps({"source": source, "schema": schema}, indent=1) + "\n"
    )


def main() -> None:
    from tests.support.hand_schemas import HAND_WRITTEN

    OUT.mkdir(parents=True, exist_ok=True)
    for old in OUT.glob("*.json"):
        old.unlink()
    for source, schema in api_payloads().items():
        write("api", source, schema)
    for source, schema in meta_schemas().items():
        write("meta", source, schema)
    for source, schema in HAND_WRITTEN.items():
        write("hand", source, schema)
    print(f"{len(list(OUT.glob('*.json')))} schemas in {OUT}")


if __name__ == "__main__":
    main()
