"""The copy of a JSON Schema that the grammar compiler sees (the validator keeps the original).

Decoding and validation answer different questions. The validator checks the reply against exactly
what the user sent; the grammar only has to make a valid reply likely and a runaway one impossible.
:func:`grammar_copy` rewrites a schema for the grammar, walking only the places that hold schemas
(never ``const``, ``enum``, ``default`` or ``examples`` values), and keeps every object's property
order, which is the order keys come out in:

- an object that declares ``properties`` but leaves ``additionalProperties`` unset (pydantic's
  default) is decoded with its declared keys only: a small model otherwise invents keys until the
  token limit, and a reply without extra keys is still valid against the original;
- ``"format": "date"`` becomes :data:`DATE_PATTERN`, so the grammar allows exactly the dates the
  validator accepts.

:func:`tool_arguments` moves a tool's parameters under a ``$defs`` entry of the schema they are
embedded in, rewriting their local ``$ref``\\ s, so pydantic's ``$defs`` / ``$ref`` (every model with
an Enum or a nested model) still resolve once the parameters sit inside a call wrapper.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

# Exactly the calendar dates Python's ``date.fromisoformat`` (jsonschema's ``date`` check) accepts:
# llguidance's own ``date`` format also allows year 0000 and days such as 02-31.
_YEAR = r"(000[1-9]|00[1-9][0-9]|0[1-9][0-9]{2}|[1-9][0-9]{3})"
_LEAP_YEAR = r"([0-9]{2}(0[48]|[2468][048]|[13579][26])|(0[48]|[2468][048]|[13579][26])00)"
DATE_PATTERN = (
    rf"^({_YEAR}-((0[13578]|1[02])-(0[1-9]|[12][0-9]|3[01])|(0[469]|11)-(0[1-9]|[12][0-9]|30)"
    rf"|02-(0[1-9]|1[0-9]|2[0-8]))|{_LEAP_YEAR}-02-29)$"
)

# Where a schema holds other schemas: one, a name -> schema map, or a list.
_ONE = (
    "additionalProperties",
    "additionalItems",
    "unevaluatedProperties",
    "unevaluatedItems",
    "contains",
    "propertyNames",
    "not",
    "if",
    "then",
    "else",
)
_MAP = ("properties", "patternProperties", "$defs", "definitions", "dependentSchemas")
_LIST = ("allOf", "anyOf", "oneOf", "prefixItems")
# Keys that combine with an object's own properties: closing the object would forbid theirs.
_COMBINING = ("allOf", "anyOf", "oneOf", "$ref", "patternProperties", "unevaluatedProperties", "if")

Rewrite = Callable[[dict[str, Any], bool], dict[str, Any]]


def walk(schema: Any, rewrite: Rewrite, *, in_all_of: bool = False) -> Any:
    """A copy of ``schema`` with ``rewrite(node, in_all_of)`` applied to every subschema, children
    first. ``in_all_of``: the node is one branch of an ``allOf``."""
    if not isinstance(schema, dict):
        return schema
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key in _ONE or (key == "items" and isinstance(value, dict)):
            out[key] = walk(value, rewrite)
        elif key == "items" and isinstance(value, list):  # draft 4-7 tuples
            out[key] = [walk(item, rewrite) for item in value]
        elif key in _MAP and isinstance(value, dict):
            out[key] = {name: walk(sub, rewrite) for name, sub in value.items()}
        elif key in _LIST and isinstance(value, list):
            out[key] = [walk(sub, rewrite, in_all_of=key == "allOf") for sub in value]
        elif key == "dependencies" and isinstance(value, dict):
            out[key] = {name: walk(sub, rewrite) for name, sub in value.items()}
        else:
            out[key] = value
    return rewrite(out, in_all_of)


def _for_grammar(node: dict[str, Any], in_all_of: bool) -> dict[str, Any]:
    if node.get("format") == "date" and "pattern" not in node:
        node = {key: value for key, value in node.items() if key != "format"}
        node["pattern"] = DATE_PATTERN
    properties = node.get("properties")
    required = node.get("required", [])
    if (
        isinstance(properties, dict)
        and "additionalProperties" not in node
        and not in_all_of
        and not any(key in node for key in _COMBINING)
        and isinstance(required, list)
        and all(name in properties for name in required)
    ):
        node["additionalProperties"] = False
    return node


def grammar_copy(schema: Any) -> Any:
    """``schema`` as the grammar compiler should see it (see the module's docstring)."""
    return walk(schema, _for_grammar)


def tool_arguments(parameters: dict[str, Any], slot: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """``parameters`` made movable: ``({"$ref": "#/$defs/SLOT"}, {SLOT: parameters'})``, where
    ``parameters'`` has each local ``$ref`` (``#...``) rebased onto ``#/$defs/SLOT``. The caller puts
    the second dict into the enclosing schema's root ``$defs``."""
    base = f"#/$defs/{slot}"

    def rebase(node: dict[str, Any], _: bool) -> dict[str, Any]:
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#"):
            node["$ref"] = base + ref[1:]
        return node

    moved = walk(parameters, rebase)
    for key in ("$schema", "$id"):
        moved.pop(key, None)
    return {"$ref": base}, {slot: moved}
