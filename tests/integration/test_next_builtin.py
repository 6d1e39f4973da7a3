"""`llmkit next` and the scoring API on the built-in model: what it predicts, exactly."""

from __future__ import annotations

import json

import pytest
from tests.helpers.cli import run_cli

import llmkit


@pytest.fixture(scope="module")
def smollm2(builtin_model_path):
    with llmkit.load("smollm2") as model:
        yield model


def test_paris_is_the_likely_next_word(smollm2) -> None:
    top = smollm2.next_tokens("The capital of France is", top=5)
    assert top[0].text == " Paris" and top[0].probability > 0.5
    scored = smollm2.score("The capital of France is Paris.")
    assert scored.tokens[-2:] == [" Paris", "."]
    assert scored.logprobs[-2] == pytest.approx(top[0].logprob, abs=1e-3)


def test_next_in_chat_mode_predicts_the_assistants_first_token(smollm2) -> None:
    plain = smollm2.next_tokens("What is the capital of France?", top=3)
    chat = smollm2.next_tokens("What is the capital of France?", top=3, chat=True)
    assert [c.id for c in plain] != [c.id for c in chat]


def test_the_cli_table_json_and_walk() -> None:
    table = run_cli("next", "smollm2", "The capital of France is", "--top", "3")
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert "prob" in lines[0] and "␣Paris" in lines[1] and len(lines) == 4
    data = json.loads(run_cli("next", "smollm2", "The capital of France is", "--json").stdout)
    assert data["next"][0]["text"] == " Paris" and len(data["next"]) == 10
    walked = run_cli("next", "smollm2", "The capital of France is", "--steps", "3", "--json")
    steps = json.loads(walked.stdout)["steps"]
    greedy = json.loads(
        run_cli(
            "run", "smollm2", "The capital of France is", "--raw", "-t", "0", "-n", "3", "--json"
        ).stdout
    )
    assert "".join(s["chosen"]["text"] for s in steps) == greedy["text"]
    assert all(s["chosen"]["rank"] == 1 for s in steps)


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--top", "0"], "--top must be between 1 and 100"),
        (["--steps", "5000"], "--steps must be between 1 and 1000"),
    ],
)
def test_bad_options_are_one_sentence(args: list[str], expected: str) -> None:
    result = run_cli("next", "smollm2", "Hello", *args)
    assert result.returncode != 0 and expected in result.stderr
    assert "Traceback" not in result.stderr
