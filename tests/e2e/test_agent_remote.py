"""The same agent loop against a real `llmkit serve` through its OpenAI-compatible API."""

from __future__ import annotations

import pytest

from llmkit.agent import Agent
from llmkit.errors import InvalidParameterError


def distance_ly(star: str) -> float:
    """Distance from the Sun to a bright star, in light-years.

    Args:
        star: The star's common name, for example "Vega".
    """
    return {"vega": 25.0, "sirius": 8.6}[star.strip().lower()]


def test_an_agent_runs_unchanged_against_a_server(server) -> None:
    agent = Agent(
        "smollm2", tools=[distance_ly], base_url=f"{server.url}/v1", api_key=server.api_key,
        max_steps=2, max_tokens=120,
    )  # fmt: skip
    result = agent.run("How far is Vega in light-years?")
    first = result.steps[0]
    # The server constrains the call (tool_choice "required"), so it is one of the user's tools.
    assert first.tool == "distance_ly" and first.error is None, first
    assert first.result == str(distance_ly(**first.arguments))
    assert result.stopped in ("answer", "max_steps", "repeated")
    assert result.steps[-1].tool is None  # the run ends with final_answer, forced if need be


def test_a_server_that_refuses_is_one_sentence(server) -> None:
    agent = Agent("smollm2", tools=[distance_ly], base_url=f"{server.url}/v1", api_key="wrong")
    with pytest.raises(InvalidParameterError, match=r"refused the request \(401\)"):
        agent.run("How far is Vega?")
    nowhere = Agent("smollm2", tools=[distance_ly], base_url="http://127.0.0.1:9/v1")
    with pytest.raises(InvalidParameterError, match="cannot be reached"):
        nowhere.run("How far is Vega?")
