"""Agents on the built-in model: real weights, its real template, and the real `llmkit agent`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tests.helpers.cli import run_cli

import llmkit
from llmkit.agent import Agent

TOOLS = Path(__file__).parents[1] / "data" / "agent_tools.py"


@pytest.fixture(scope="module")
def smollm2(builtin_model_path):
    with llmkit.load("smollm2") as model:
        yield model


def distance_ly(star: str) -> float:
    """Distance from the Sun to a bright star, in light-years.

    Args:
        star: The star's common name, for example "Vega".
    """
    return {"vega": 25.0, "sirius": 8.6}[star.strip().lower()]


def test_every_step_is_a_valid_call_and_reuses_the_cache(smollm2) -> None:
    result = Agent(smollm2, tools=[distance_ly], max_steps=3).run("How far is Vega in light-years?")
    first = result.steps[0]
    # The 135M model does pick the tool, with a valid argument, through the grammar.
    assert first.tool == "distance_ly" and first.arguments == {"star": "Vega"}
    assert first.result == "25.0" and first.error is None
    for step in result.steps:
        assert step.tool in ("distance_ly", None)
        assert step.error is None or "raised KeyError" in step.error
    later = result.steps[1]
    # The second prompt starts with the first: only the new turn's tokens are evaluated.
    assert later.cached_tokens >= first.tokens - len(smollm2.tokenize(first.text)) - 2
    assert later.tokens < first.tokens / 2
    assert result.stopped in ("answer", "max_steps", "repeated")


def test_the_cli_shows_each_step_and_answers(builtin_model_path, tmp_path: Path) -> None:
    record = tmp_path / "runs.jsonl"
    env = {"LLMKIT_HOME": str(tmp_path / "home")}
    result = run_cli(
        "agent", "smollm2", "--tools", f"{TOOLS}:distance_ly", "--max-steps", "2",
        "--record", str(record), "--json", "How far is Vega in light-years?", env=env,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    logged = json.loads(run_cli("logs", "--json", env=env).stdout)
    assert [(e["kind"], e["prompt"]) for e in logged] == [
        ("agent", "How far is Vega in light-years?")
    ]
    assert logged[0]["parameters"]["calls"][0]["tool"] == "distance_ly"
    trace = json.loads(result.stdout)
    assert trace["steps"][0]["tool"] == "distance_ly" and trace["steps"][0]["result"] == "25.0"
    assert trace["stopped"] in ("answer", "max_steps", "repeated")
    saved = [json.loads(line) for line in record.read_text().splitlines()]
    assert len(saved) == 1 and saved[0]["tools"][0]["function"]["name"] == "distance_ly"
    assert [m["role"] for m in saved[0]["messages"]][:4] == ["system", "user", "assistant", "tool"]

    shown = run_cli(
        "agent", "smollm2", "--tools", f"{TOOLS}:distance_ly", "--max-steps", "1",
        "How far is Vega in light-years?",
    )  # fmt: skip
    assert shown.returncode == 0, shown.stderr
    assert '→ distance_ly(star="Vega")' in shown.stderr and "= 25.0" in shown.stderr


@pytest.mark.parametrize(
    ("tools", "expected"),
    [
        (f"{TOOLS}:broken", "Tool 'broken': parameter 'x' has no type hint"),
        (f"{TOOLS}:missing", "has no function missing; it defines: distance_ly, broken, _helper"),
        ("nowhere.py", "--tools needs a Python file"),
    ],
)
def test_bad_tools_are_one_clear_error(tools: str, expected: str) -> None:
    result = run_cli("agent", "smollm2", "--tools", tools, "task")
    assert result.returncode != 0
    assert expected in result.stderr and "Traceback" not in result.stderr
