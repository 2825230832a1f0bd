"""Pydantic schemas and forced tool calls through the official ``openai`` client, with a retry.

Three things trillm enforces while decoding, shown on one model:

1. ``chat.completions.parse`` with a nested pydantic model: keys come out in the declared order
   (``reasoning`` before ``answer``) and the reply is validated against the schema.
2. ``tool_choice="required"`` with ``pydantic_function_tool`` (an Enum and a nested model, so
   ``$defs`` and ``$ref``): the reply is one valid call, never prose.
3. A reply the token limit cuts short is a 422 whose body holds what was generated
   (``error.body["partial"]``), so a client can retry with a larger budget and show the text::

    python examples/structured_tools.py MODEL [--host HOST]
"""

from __future__ import annotations

import argparse
from enum import StrEnum

import openai
from pydantic import BaseModel, Field
from server_address import reachable, server_url


class Unit(StrEnum):
    CELSIUS = "celsius"
    FAHRENHEIT = "fahrenheit"


class Place(BaseModel):
    city: str
    country: str


class GetWeather(BaseModel):
    """Get the current weather for a place."""

    place: Place
    unit: Unit


class Answer(BaseModel):
    reasoning: str = Field(max_length=300)
    answer: int


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("--host", help="server address (default: TRILLM_HOST, OLLAMA_HOST, 127.0.0.1:11434)")
    args = parser.parse_args()
    url = server_url(args.host)
    reachable(
        lambda: ask(openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0), args.model), url
    )


def ask(client: openai.OpenAI, model: str) -> None:
    ask = [{"role": "user", "content": "What is 17 + 25? Think first."}]

    budget = 16  # too small on purpose: the first try is cut, the retry gets more room
    while True:
        try:
            reply = client.chat.completions.parse(
                model=model, messages=ask, response_format=Answer, max_tokens=budget
            )
            break
        except openai.UnprocessableEntityError as error:
            body = error.body if isinstance(error.body, dict) else {}
            partial = body.get("partial", {}).get("message", {}).get("content", "")
            print(f"cut at {budget} tokens, had written: {partial!r}; retrying with {budget * 8}")
            budget *= 8
    parsed = reply.choices[0].message.parsed
    print("parsed:", parsed)

    call = client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": "Is it cold in Oslo?"}],
        tools=[openai.pydantic_function_tool(GetWeather)],
        tool_choice="required",
    )
    for tool_call in call.choices[0].message.tool_calls or []:
        if tool_call.type == "function":
            arguments = GetWeather.model_validate_json(tool_call.function.arguments)
            print("call:", tool_call.function.name, arguments)


if __name__ == "__main__":
    main()
