"""The astronomer's generated training set: held-out tasks unseen, prompts as the agent sends them."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

from tests.unit.test_agent import TEMPLATE, agent_with

from llmkit.agent.training import pairs_to_conversations
from llmkit.train.masks import TemplateTokens, assistant_spans

ASTRO = Path(__file__).parents[2] / "examples" / "agents" / "astro"


def load(name: str) -> Any:
    spec = importlib.util.spec_from_file_location(f"astro_{name}", ASTRO / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_generated_rows_never_use_a_heldout_body_or_number() -> None:
    make_train = load("make_train")
    heldout = [task for task in make_train.load_tasks() if task["split"] != "train"]
    bodies, numbers = make_train.unseen(heldout)
    assert {"vega", "rigel", "jupiter", "saturn", "moon"} <= bodies and {7.0, 500.0} <= numbers
    pairs = make_train.generate(300, seed=1)
    assert len({pair["question"] for pair in pairs}) == 300
    assert {pair["tool"] for pair in pairs} == {
        "convert_distance", "distance_to", "radius_of", "angular_size",
    }  # fmt: skip
    for pair in pairs:
        for value in pair["arguments"].values():
            assert not (isinstance(value, str) and value.lower() in bodies), pair
            assert not (isinstance(value, int | float) and float(value) in numbers), pair
        assert not any(task["question"] == pair["question"] for task in heldout)
    # Every pair is a call that runs, and its row's answer carries the unit.
    tools = load("tools")
    rows = pairs_to_conversations(
        pairs[:20], tools.TOOLS, system=tools.SYSTEM, answer=make_train.answer
    )
    for pair, row in zip(pairs[:20], rows, strict=True):
        final = row["messages"][-1]["tool_calls"][0]["function"]["arguments"]["answer"]
        unit = pair["arguments"].get("to_unit") or pair["arguments"].get("unit")
        assert final.endswith(unit or ("km" if pair["tool"] == "radius_of" else "arcseconds"))


def test_a_training_row_renders_the_prompts_the_agent_sends() -> None:
    make_train, tools = load("make_train"), load("tools")
    pair = make_train.generate(1, seed=3)[0]
    (row,) = pairs_to_conversations([pair], tools.TOOLS, system=tools.SYSTEM)
    calls = [m["tool_calls"][0]["function"] for m in row["messages"] if m.get("tool_calls")]
    replies = [json.dumps({"name": c["name"], "arguments": c["arguments"]}) for c in calls]
    prompts: list[str] = []

    def script(prompt: str) -> list[str]:
        prompts.append(prompt)
        return replies

    agent = agent_with(script, tools.TOOLS, system=tools.SYSTEM)
    result = agent.run(pair["question"])
    assert result.stopped == "answer" and len(prompts) == 2
    # Each prompt the agent sent is the training text up to that assistant turn, exactly.
    full, spans = assistant_spans(TemplateTokens(TEMPLATE), row["messages"], tools=row["tools"])
    assert [full[:start] for start, _ in spans] == prompts


def test_chained_rows_ask_several_questions_under_one_system_prompt() -> None:
    make_train, tools = load("make_train"), load("tools")
    pairs = make_train.generate(5, seed=2)
    rows = pairs_to_conversations(pairs, tools.TOOLS, system=tools.SYSTEM)
    first, second = make_train.chained(rows, 3)
    roles = [message["role"] for message in first["messages"]]
    assert roles.count("system") == 1 and roles.count("user") == 3 and roles[0] == "system"
    assert first["messages"][:5] == rows[0]["messages"]  # the first question: the agent's own
    assert [m["content"] for m in second["messages"] if m["role"] == "user"] == [
        pair["question"] for pair in pairs[3:]
    ]
    full, spans = assistant_spans(TemplateTokens(TEMPLATE), first["messages"], tools=first["tools"])
    assert len(spans) == 6 and full.count("You can call these functions") == 1
