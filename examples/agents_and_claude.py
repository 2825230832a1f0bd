"""The Responses and Messages APIs: an OpenAI Agents SDK agent with a tool, and the Anthropic client.

1. An agent with a function tool, run by the OpenAI Agents SDK's default model path (the
   Responses API, ``/v1/responses``): the model calls the tool, the SDK runs it and sends the
   result back, and the model answers from it.
2. The same question through the ``anthropic`` client (``/v1/messages``), streamed; a
   ``tool_use`` block comes back whole, with its parsed ``input``.

Needs ``pip install openai-agents anthropic`` and a model that calls tools (Qwen 2.5 or 3)::

    python examples/agents_and_claude.py MODEL [--host HOST]
"""

from __future__ import annotations

import argparse
import asyncio

import anthropic
import openai
from server_address import reachable, server_url

WEATHER = {
    "type": "object",
    "properties": {"city": {"type": "string", "description": "The city"}},
    "required": ["city"],
}


async def run_agent(url: str, model: str) -> None:
    import agents

    async def get_weather(context: object, arguments: str) -> str:
        print(f"  (tool called with {arguments})")
        return "22 degrees and sunny"

    tool = agents.FunctionTool(
        name="get_weather",
        description="Get the current weather for a city.",
        params_json_schema=WEATHER,
        on_invoke_tool=get_weather,
        strict_json_schema=False,
    )
    client = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="unused")
    agent = agents.Agent(
        name="weather", model=agents.OpenAIResponsesModel(model=model, openai_client=client), tools=[tool]
    )
    result = await agents.Runner.run(
        agent, "What is the weather in Paris?", run_config=agents.RunConfig(tracing_disabled=True)
    )
    print("agent:", result.final_output)


async def ask_claude_style(url: str, model: str) -> None:
    client = anthropic.AsyncAnthropic(base_url=url, api_key="unused")
    tool = {
        "name": "get_weather",
        "description": "Get the current weather for a city.",
        "input_schema": WEATHER,
    }
    async with client.messages.stream(
        model=model,
        max_tokens=256,
        tools=[tool],  # type: ignore[list-item]
        messages=[{"role": "user", "content": "What is the weather in Paris?"}],
    ) as stream:
        async for text in stream.text_stream:
            print(text, end="", flush=True)
        message = await stream.get_final_message()
    for block in message.content:
        if block.type == "tool_use":
            print(f"\nmessages: tool_use {block.name}({block.input})")
    print(f"stop_reason: {message.stop_reason}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("--host", help="server address (default: TRILLM_HOST, OLLAMA_HOST, 127.0.0.1:11434)")
    args = parser.parse_args()
    url = server_url(args.host)
    reachable(lambda: asyncio.run(run_agent(url, args.model)), url)
    reachable(lambda: asyncio.run(ask_claude_style(url, args.model)), url)


if __name__ == "__main__":
    main()
