"""The OpenAI Agents SDK's default model (the Responses API) against a real `llmkit serve`."""

from __future__ import annotations

import pytest

from tests.e2e.conftest import Server

agents = pytest.importorskip("agents")
openai = pytest.importorskip("openai")


def test_an_agents_sdk_run_completes_with_a_tool(server: Server) -> None:
    calls: list[str] = []

    @agents.function_tool
    def get_weather(city: str) -> str:
        """The current weather in a city."""
        calls.append(city)
        return f"Sunny in {city}, 21 C"

    agents.set_tracing_disabled(True)  # nothing leaves the machine
    client = openai.AsyncOpenAI(base_url=f"{server.url}/v1", api_key=server.api_key, max_retries=0)
    model = agents.OpenAIResponsesModel(model="smollm2", openai_client=client)
    agent = agents.Agent(
        name="weather",
        instructions="Use get_weather to answer questions about the weather.",
        model=model,
        tools=[get_weather],
        model_settings=agents.ModelSettings(tool_choice="required", max_tokens=60, temperature=0),
        tool_use_behavior="stop_on_first_tool",
    )
    result = agents.Runner.run_sync(agent, "What is the weather in Paris?", max_turns=3)
    assert len(calls) == 1 and isinstance(calls[0], str)
    assert result.final_output == f"Sunny in {calls[0]}, 21 C"
