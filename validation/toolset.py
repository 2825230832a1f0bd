"""The tools a request declares: their schemas checked up front, and calls checked against them."""

from __future__ import annotations

import json
from typing import Any

import jsonschema

from validation.request_checks import FieldError, schema_problem
from validation.tool_calls import ToolCall

# What chat templates are written for (and models trained on): other keys a client sends, such as
# OpenAI's ``strict``, would change the prompt the model sees.
TEMPLATE_KEYS = ("name", "description", "parameters")


def template_tool(tool: dict[str, Any]) -> dict[str, Any]:
    """``tool`` in the shape chat templates render: ``type`` and the function's name,
    description and parameters, nothing else."""
    function = tool["function"]
    return {"type": "function", "function": {k: function[k] for k in TEMPLATE_KEYS if k in function}}


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
            problem = schema_problem(json.dumps(schema, sort_keys=True))
            if problem is not None:
                raise FieldError(
                    f"tools[{i}].function.parameters is not a valid JSON Schema at "
                    f"{problem.json_path}: {problem.message}"
                )
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
