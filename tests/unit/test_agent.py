"""Agents over the scripted fake engine: tool schemas from functions, and the loop's every ending."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Sequence
from typing import Literal

import pytest
from tests.helpers.fake_engine import FakeEngine

from llmkit.agent import Agent, Tool, ToolError, tool
from llmkit.agent.functions import as_tool, call_tool, coerce_arguments
from llmkit.model import Model
from llmkit.store.store import ModelManifest

END = 400
TEMPLATE = (
    "{% for m in messages %}<{{ m.role }}>{{ m.content }}</{{ m.role }}>\n{% endfor %}"
    "{% if add_generation_prompt %}<assistant>{% endif %}"
)


def distance_ly(star: str, unit: Literal["ly", "pc"] = "ly") -> float:
    """Distance from the Sun to a bright star.

    Args:
        star: The star's common name,
            for example "Vega".
        unit: Light-years or parsecs.

    Returns:
        The distance.
    """
    distances = {"vega": 25.0, "sirius": 8.6}
    return distances[star.lower()] / (3.26 if unit == "pc" else 1.0)


def call_text(name: str, arguments: dict) -> str:
    return json.dumps({"name": name, "arguments": arguments})


def agent_with(replies, tools, context_length: int = 4096, **options) -> Agent:
    """An agent whose model writes `replies(prompt_text)` (a list of texts, one per step)."""

    def script(prompt_ids: Sequence[int]) -> list[int]:
        prompt = "".join(chr(i) for i in prompt_ids)
        step = prompt.count("<assistant>") - 1  # earlier replies, each one assistant turn
        texts = replies(prompt)
        return [ord(c) for c in texts[min(step, len(texts) - 1)]] + [END]

    engine = FakeEngine(
        {END: b"<end>"}, script, context_length, end_of_generation=[END], vocab_size=512
    )
    manifest = ModelManifest(
        "fake", "/nowhere.gguf", "gguf", "0" * 64, 1, "test",
        info={"chat_template": TEMPLATE, "eos_token": "<end>"},
    )  # fmt: skip
    return Agent(Model(manifest, engine), tools=tools, **options)


# ---- functions as tools -------------------------------------------------------------------
def test_a_function_becomes_a_schema_from_its_hints_and_docstring() -> None:
    made = as_tool(distance_ly)
    assert made.name == "distance_ly"
    assert made.description == "Distance from the Sun to a bright star."
    assert made.parameters == {
        "type": "object",
        "properties": {
            "star": {
                "type": "string",
                "description": 'The star\'s common name, for example "Vega".',
            },
            "unit": {"enum": ["ly", "pc"], "description": "Light-years or parsecs."},
        },
        "required": ["star"],
        "additionalProperties": False,
    }


def test_more_types_and_the_decorator_options() -> None:
    @tool(confirm=True, timeout=5)
    def mean(values: list[float], label: str | None = None, weights: dict | None = None) -> float:
        """The mean."""
        return sum(values) / len(values)

    made = as_tool(mean)
    assert made.confirm and made.timeout == 5.0
    properties = made.parameters["properties"]
    assert properties["values"] == {"type": "array", "items": {"type": "number"}}
    assert properties["label"] == {"anyOf": [{"type": "string"}, {"type": "null"}]}
    assert mean([1, 3]) == 2  # still the function it was


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("def f(x): pass", "Tool 'f': parameter 'x' has no type hint"),
        ("def f(x: set): pass", "parameter 'x' has type set, which a JSON schema cannot describe"),
        ("def f(*xs: int): pass", "*xs cannot be described"),
    ],
)
def test_functions_that_cannot_be_tools_are_one_clear_error(source: str, expected: str) -> None:
    namespace: dict = {}
    exec(source, namespace)
    with pytest.raises(ToolError, match=expected.replace("*", r"\*")):
        as_tool(namespace["f"])


def test_bad_tool_options_and_values_are_refused() -> None:
    with pytest.raises(ToolError, match="timeout"):
        tool(timeout=0)(distance_ly)
    with pytest.raises(ToolError, match="must be a function"):
        as_tool(42)


def test_arguments_are_validated_and_numbers_coerced() -> None:
    def scale(x: float, times: int) -> float:
        return x * times

    made = as_tool(scale)
    assert coerce_arguments(made, {"x": 2, "times": 3}) == {"x": 2.0, "times": 3}
    assert isinstance(coerce_arguments(made, {"x": 2, "times": 3})["x"], float)
    with pytest.raises(ToolError, match="Invalid arguments for scale: times"):
        coerce_arguments(made, {"x": 2, "times": "three"})
    with pytest.raises(ToolError, match="'times' is a required property"):
        coerce_arguments(made, {"x": 2})


def test_tool_failures_become_one_sentence_for_the_model() -> None:
    def hang() -> str:
        time.sleep(5)
        return "late"

    def odd() -> object:
        return object()

    async def later(n: int) -> int:
        await asyncio.sleep(0)
        return n + 1

    assert call_tool(as_tool(later), {"n": 1}) == "2"
    with pytest.raises(ToolError, match=r"did not finish within 0\.2 seconds"):
        call_tool(Tool("hang", "", {}, hang, timeout=0.2), {})
    with pytest.raises(ToolError, match="returned a object, which is not JSON"):
        call_tool(as_tool(odd), {})
    with pytest.raises(ToolError, match="distance_ly raised KeyError: 'nowhere'"):
        call_tool(as_tool(distance_ly), {"star": "nowhere"})


# ---- the loop -----------------------------------------------------------------------------
def test_a_call_then_the_answer_with_the_cache_reused() -> None:
    agent = agent_with(
        lambda prompt: [
            call_text("distance_ly", {"star": "Vega"}),
            call_text("final_answer", {"answer": "About 25 light-years."}),
        ],
        [distance_ly],
    )
    events = list(agent.stream("How far is Vega?"))
    result = events[-1]
    assert result.answer == "About 25 light-years." and result.stopped == "answer"
    first, last = result.steps
    assert events[:2] == [first, last]
    assert (first.tool, first.arguments, first.result, first.error) == (
        "distance_ly",
        {"star": "Vega"},
        "25.0",
        None,
    )
    assert last.tool is None and last.result == "About 25 light-years."
    # The second step's prompt begins with the first's: only the new turn is evaluated.
    assert last.cached_tokens > first.tokens - len(first.text) - 5
    assert last.tokens < first.tokens
    roles = [m["role"] for m in result.messages]
    assert roles == ["system", "user", "assistant", "tool", "assistant"]
    assert "distance_ly" in result.messages[0]["content"]  # the generic format's tool list


def test_errors_go_back_to_the_model_as_observations() -> None:
    seen = []

    def replies(prompt: str) -> list[str]:
        seen.append(prompt)
        return [
            call_text("distance_ly", {"star": "Nowhere"}),
            call_text("distance_ly", {"star": "Sirius"}),
            call_text("final_answer", {"answer": "8.6"}),
        ]

    result = agent_with(replies, [distance_ly]).run("How far is Sirius?")
    assert result.answer == "8.6"
    assert result.steps[0].error == "distance_ly raised KeyError: 'nowhere'"
    assert "<tool>Error: distance_ly raised KeyError" in seen[-1]


def test_a_repeated_call_stops_the_run() -> None:
    result = agent_with(
        lambda prompt: [call_text("distance_ly", {"star": "Vega"})], [distance_ly], max_repeats=1
    ).run("How far is Vega?")
    assert result.stopped == "repeated" and len(result.steps) == 3
    assert "same arguments 3 times" in result.note and result.answer == "25.0"


def test_max_steps_ends_with_a_best_effort_answer() -> None:
    stars = ["Vega", "Sirius", "Vega"]

    def replies(prompt: str) -> list[str]:
        if "Give your final answer now" in prompt:
            return [call_text("final_answer", {"answer": "I found 25 and 8.6."})] * 4
        return [call_text("distance_ly", {"star": s}) for s in stars]

    result = agent_with(replies, [distance_ly], max_steps=2).run("Compare Vega and Sirius.")
    assert result.stopped == "max_steps" and "within 2 steps" in result.note
    assert result.answer == "I found 25 and 8.6." and len(result.steps) == 3


def test_a_reply_is_always_a_call_to_a_known_tool() -> None:
    agent = agent_with(lambda prompt: [""], [distance_ly])
    constraint = agent.backend._constraints["any"]()
    assert not constraint.allowed()[ord("I")]  # no free text: a reply opens a call
    for token in '{"name": "':
        constraint.accept(ord(token))
    allowed = constraint.allowed()
    assert [c for c in "dft" if allowed[ord(c)]] == ["d", "f"]  # distance_ly or final_answer
    for token in 'distance_ly", "arguments": {"star": "Vega", "unit": "ly"':
        constraint.accept(ord(token))
    assert not constraint.allowed()[ord(",")]  # no argument the function does not take


def test_a_declined_call_is_an_observation() -> None:
    asked = []
    result = agent_with(
        lambda prompt: [
            call_text("distance_ly", {"star": "Vega"}),
            call_text("final_answer", {"answer": "Not allowed."}),
        ],
        [distance_ly],
        confirm=lambda name, arguments: asked.append((name, arguments)) or False,
    ).run("How far is Vega?")
    assert asked == [("distance_ly", {"star": "Vega"})]
    assert result.steps[0].error == "The user declined the call to distance_ly."


def test_long_results_are_cut_and_old_results_dropped_to_fit() -> None:
    def page(n: int) -> str:
        """A long page."""
        return "x" * 5000

    replies = [call_text("page", {"n": i}) for i in range(3)]
    replies.append(call_text("final_answer", {"answer": "done"}))
    result = agent_with(
        lambda prompt: replies, [page], context_length=1800, result_chars=500, max_tokens=100
    ).run("Read.")
    assert result.steps[0].result.endswith("[cut: 4,500 more characters]")
    assert result.stopped == "answer"
    dropped = [
        m
        for m in result.messages
        if m.get("content") == "[result dropped to fit the context window]"
    ]
    assert dropped  # the oldest results made room for the newest


def test_a_conversation_that_cannot_fit_ends_cleanly() -> None:
    result = agent_with(
        lambda prompt: [call_text("final_answer", {"answer": "x"})],
        [distance_ly],
        context_length=200,
        max_tokens=50,
    ).run("How far is Vega? " * 20)
    assert result.stopped == "context" and "context window holds 200" in result.note


def test_bad_agent_options_are_refused() -> None:
    with pytest.raises(ToolError, match="Two tools are named"):
        agent_with(lambda p: [""], [distance_ly, distance_ly])
    with pytest.raises(Exception, match="max_steps must be between 1 and 100"):
        agent_with(lambda p: [""], [distance_ly], max_steps=0)
    agent = agent_with(lambda p: [""], [distance_ly])
    with pytest.raises(Exception, match="non-empty text"):
        agent.run("  ")


def test_the_first_reply_calls_one_of_the_users_tools_unless_told_otherwise() -> None:
    def name_choices(agent: Agent) -> list[str]:
        constraint = agent.backend._constraints["first"]()
        for token in '{"name": "':
            constraint.accept(ord(token))
        return [c for c in "df" if constraint.allowed()[ord(c)]]

    assert name_choices(agent_with(lambda p: [""], [distance_ly])) == ["d"]
    assert name_choices(agent_with(lambda p: [""], [distance_ly], require_tool=False)) == ["d", "f"]
