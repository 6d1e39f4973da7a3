"""Tool conversations as training data: what the loss covers, recorded runs, pairs, the astro set."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest
from tests.helpers.tiny_model import CHATML
from tests.unit.test_agent import agent_with, call_text
from tests.unit.test_train_data import char_tokenize, write_rows

from llmkit.agent.functions import ToolError
from llmkit.agent.training import pairs_to_conversations
from llmkit.train.data import DataError, read_jsonl
from llmkit.train.masks import TemplateTokens, tokenize_dataset, tokenize_example

ASTRO = Path(__file__).parents[2] / "examples" / "agents" / "astro"
# A template with tool syntax: the tools in the prompt, calls in <tool_call> tags.
NATIVE = (
    "{% if tools %}<|im_start|>system\nTools: {{ tools | tojson }}<|im_end|>\n{% endif %}"
    "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}"
    "{% for c in m.tool_calls or [] %}<tool_call>{{ c.function | tojson }}</tool_call>{% endfor %}"
    "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def distance_ly(star: str) -> float:
    """Distance to a star in light-years.

    Args:
        star: Its name.
    """
    return {"vega": 25.0, "sirius": 8.6}[star.lower()]


def trained_text(template: str, row: dict) -> tuple[str, str]:
    """(the trained characters, the untrained ones) of a row under a template."""
    path_row = read_row(row)
    tokens = TemplateTokens(template, end_of_turn="<|im_end|>")
    tokenized = tokenize_example(path_row, tokens, char_tokenize)
    chars = [chr(i) if i < 1000 else "¤" for i in tokenized.input_ids]
    return (
        "".join(c for c, t in zip(chars, tokenized.trained, strict=True) if t),
        "".join(c for c, t in zip(chars, tokenized.trained, strict=True) if not t),
    )


def read_row(row: dict, tmp: Path | None = None):
    from llmkit.train.data import parse_row

    return parse_row(json.loads(json.dumps(row)), "t:1")


@pytest.mark.parametrize("template", [CHATML, NATIVE])
def test_the_loss_covers_calls_and_answers_never_tool_results(template: str) -> None:
    (row,) = pairs_to_conversations(
        [{"question": "How far is Vega?", "tool": "distance_ly", "arguments": {"star": "Vega"}}],
        [distance_ly],
        system="Be brief.",
        answer=lambda pair, result: f"{result} light-years",
    )
    trained, untrained = trained_text(template, row)
    # Both calls are trained, each with its end-of-turn token (¤ is <|im_end|>).
    assert '"name": "distance_ly"' in trained and '"star": "Vega"' in trained
    assert '"answer": "25.0 light-years"' in trained and trained.count("¤") == 2
    # The question, the tool descriptions and the tool's result are context only.
    assert "How far is Vega?" in untrained and "25.0" not in trained.replace("25.0 light", "")
    assert "tool\n25.0¤" in untrained and "Distance to a star" in untrained
    if template == NATIVE:
        assert "<tool_call>" in trained and "Tools: [" in untrained
    else:  # no tool syntax: the calls are bare JSON, the tools described in the system message
        assert "You can call these functions" in untrained and "<tool_call>" not in trained


def test_a_recorded_run_is_accepted_by_the_trainer(tmp_path: Path) -> None:
    replies = [
        call_text("distance_ly", {"star": "Sirius"}),
        call_text("final_answer", {"answer": "8.6 light-years"}),
    ]
    agent = agent_with(lambda prompt: replies, [distance_ly])
    result = agent.run("How far is Sirius?")
    # What `llmkit agent --record` writes for this run.
    path = write_rows(
        tmp_path / "runs.jsonl", [{"messages": result.messages, "tools": agent.specs}]
    )
    examples = read_jsonl(path)
    tokens = TemplateTokens(CHATML, end_of_turn="<|im_end|>")
    (tokenized,), _ = tokenize_dataset(examples, tokens, char_tokenize, max_length=4096)
    trained = "".join(
        chr(i) for i, t in zip(tokenized.input_ids, tokenized.trained) if t and i < 1000
    )
    assert '"Sirius"' in trained and "8.6 light-years" in trained
    # The system message the agent showed is not doubled by the renderer.
    rendered = "".join(chr(i) if i < 1000 else "¤" for i in tokenized.input_ids)
    assert rendered.count("You can call these functions") == 1


def test_bad_tool_rows_are_named(tmp_path: Path) -> None:
    path = write_rows(
        tmp_path / "bad.jsonl",
        [
            {"messages": [{"role": "user", "content": "q"},
                          {"role": "assistant", "tool_calls": [{"function": {"arguments": {}}}]}]},
            {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}],
             "tools": "distance_ly"},
        ],
    )  # fmt: skip
    with pytest.raises(DataError) as caught:
        read_jsonl(path)
    assert "bad.jsonl:1: message 1 has a tool call that is not" in str(caught.value)
    assert "bad.jsonl:2: 'tools' must be a list of function schemas" in str(caught.value)


def test_a_pair_whose_call_fails_is_refused() -> None:
    with pytest.raises(ToolError, match="distance_ly raised KeyError"):
        pairs_to_conversations(
            [{"question": "q", "tool": "distance_ly", "arguments": {"star": "Nowhere"}}],
            [distance_ly],
        )


def test_the_astro_tools_and_tasks_are_valid() -> None:
    spec = importlib.util.spec_from_file_location("astro_tools", ASTRO / "tools.py")
    assert spec is not None and spec.loader is not None
    tools = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tools)
    rows = [json.loads(line) for line in (ASTRO / "tasks.jsonl").read_text().splitlines()]
    splits = {row["split"] for row in rows}
    assert len(rows) >= 30 and splits == {"train", "heldout", "paraphrase"}
    assert 10 <= sum(row["split"] == "heldout" for row in rows) <= 15
    assert 10 <= sum(row["split"] == "paraphrase" for row in rows) <= 15
    assert len({row["question"] for row in rows}) == len(rows)
    for row in rows:  # each known answer is what the expected call returns
        value = getattr(tools, row["tool"])(**row["arguments"])
        assert math.isclose(value, row["answer"], rel_tol=1e-9), row["question"]
    # Spot checks against the catalog facts, independent of the table.
    assert math.isclose(tools.convert_distance(1, "pc", "ly"), 3.2616, rel_tol=1e-4)
    assert math.isclose(tools.angular_size(3474.8, 384_400), 1864.5, rel_tol=1e-3)
    # All of them are valid agent tools, and a pair set builds from the train split.
    train = [row for row in rows if row["split"] == "train"]
    conversations = pairs_to_conversations(train, tools.TOOLS)
    assert len(conversations) == len(train)
