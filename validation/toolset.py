"""The tools a request declares: their schemas checked up front, and calls checked against them."""

from __future__ import annotations

import json
from typing import Any

import jsonschema
from jsonschema.exceptions import SchemaError

from validation.request_checks import FieldError
from validation.tool_calls import ToolCall
from validation.verdicts import Verdicts

# What chat templates are written for (and models trained on): other keys a client sends, such as
# OpenAI's ``strict``, would change the prompt the model sees.
TEMPLATE_KEYS = ("name", "description", "parameters")


def template_tool(tool: dict[str, Any]) -> dict[str, Any]:
    """``tool`` in the shape chat templates render: ``type`` and the function's name,
    description and parameters, nothing else."""
    function = tool["function"]
    return {"type": "function", "function": {k: function[k] for k in TEMPLATE_KEYS if k in function}}


def _check_schema(text: str) -> str | None:
    """Where and why a tool's parameter schema is not valid JSON Schema, or ``None``."""
    schema = json.loads(text)
    cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    try:
        cls.check_schema(schema)
    except SchemaError as error:
        return f"{error.json_path}: {error.message}"
    return None


# Clients send the same tools with every request, and checking one costs milliseconds.
_schema_problem = Verdicts("tool schema", _check_schema)


class ToolSet:
    """Validated tool definitions (``{"type": "function", "function": {...}}``).

    ``tools`` are as the client sent them; ``for_template`` is what the chat template renders.
    Every declared schema is enforced while decoding and checked afterwards, so OpenAI's
    ``strict: true`` holds whatever its value.
    """

    def __init__(self, tools: list[dict[str, Any]]) -> None:
        self.tools = tools
        self.text = json.dumps(tools, sort_keys=True)  # what grammars of these tools are remembered by
        self.for_template = [template_tool(tool) for tool in tools]
        self._validators: dict[str, Any] = {}
        for i, tool in enumerate(tools):
            function = tool["function"]
            schema = function.get("parameters") or {"type": "object"}
            cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
            problem = _schema_problem(json.dumps(schema, sort_keys=True))
            if problem is not None:
                raise FieldError(f"tools[{i}].function.parameters is not a valid JSON Schema at {problem}")
            self._validators[function["name"]] = cls(schema)

    @property
    def names(self) -> list[str]:
        return list(self._validators)

    def problem(self, call: ToolCall) -> str | None:
        """Why ``call`` is not a valid call of a declared tool, or ``None``."""
        validator = self._validators.get(call.name)
        if validator is None:
            return f"the model called {call.name!r}, which is not one of the tools ({', '.join(self.names)})"
        worst = jsonschema.exceptions.best_match(validator.iter_errors(call.arguments))
        if worst is not None:
            return f"arguments of {call.name!r} at {worst.json_path}: {worst.message}"
        return None
