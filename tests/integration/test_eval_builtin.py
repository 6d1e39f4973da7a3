"""`llmkit eval` through the real CLI, on the built-in model and lm-eval itself."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tests.helpers.cli import run_cli

pytest.importorskip("lm_eval")


def assert_one_sentence(result, fragment: str) -> None:
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    message = " ".join(result.stderr.split())
    assert message.startswith("Error:") and fragment in message, result.stderr


@pytest.mark.slow
def test_eval_scores_the_built_in_set_with_a_limit(builtin_model_path: Path) -> None:
    result = run_cli("eval", "smollm2", "--limit", "5", timeout=600)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["task", "metric", "n", "smollm2"]
    acc = next(line.split() for line in lines if " acc " in f" {line} ")
    assert acc[:3] == ["llmkit-facts", "acc", "5"] and 0 <= float(acc[3]) <= 1
    assert lines[-1].split()[0] == "time"


@pytest.mark.slow
def test_json_a_users_yaml_task_and_perplexity(builtin_model_path: Path, tmp_path: Path) -> None:
    quiz = tmp_path / "quiz.jsonl"
    quiz.write_text(
        json.dumps({"question": "What is the capital of France?", "choices": ["Paris", "Oslo"],
                    "answer": 0}) + "\n"
    )  # fmt: skip
    # A YAML task as lm-eval's documentation writes one, reading a local file.
    task = tmp_path / "capitals.yaml"
    task.write_text(
        "task: capitals\n"
        "dataset_path: json\n"
        f"dataset_kwargs:\n  data_files:\n    test: {quiz}\n"
        "test_split: test\n"
        "output_type: multiple_choice\n"
        'doc_to_text: "{{question}} Answer:"\n'
        "doc_to_choice: choices\n"
        "doc_to_target: answer\n"
        "metric_list:\n  - metric: acc\n"
    )
    text = tmp_path / "story.txt"
    text.write_text("The Sun is a star. The Earth goes around the Sun once a year.\n")
    result = run_cli(
        "eval", "smollm2", "--task-file", str(task), "--perplexity", str(text), "--json",
        timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    (scores,) = json.loads(result.stdout)["models"]
    assert scores["model"] == "smollm2" and scores["engine"] == "llamacpp"
    assert scores["scores"]["capitals"]["acc"] == 1.0  # Paris, surely
    perplexity = scores["scores"]["perplexity_story"]
    assert 1 < perplexity["byte_perplexity"] < perplexity["word_perplexity"]
    assert scores["samples"] == {"capitals": 1, "perplexity_story": 1}


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["smollm2", "--task", "hellaswag"], "Unknown task 'hellaswag'"),
        (["smollm2", "gemma3-base"], "use --compare A B C"),
        (["--compare", "smollm2"], "--compare needs two or more models"),
        (["smollm2", "--limit", "0"], "--limit must be at least 1"),
        (["smollm2", "--task-file", "missing.yaml"], "No such task file: missing.yaml"),
    ],
)
def test_bad_input_is_one_sentence(args: list[str], expected: str) -> None:
    assert_one_sentence(run_cli("eval", *args), expected)


def test_a_malformed_jsonl_line_is_named(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "q", "choices": ["a", "b"], "answer": 5}\n')
    assert_one_sentence(run_cli("eval", "smollm2", "--task", str(bad)), "line 1: 'answer'")


def test_a_yaml_task_that_lm_eval_cannot_load_is_one_sentence(tmp_path: Path) -> None:
    task = tmp_path / "broken.yaml"
    task.write_text("task: broken\ndataset_path: json\ndataset_kwargs:\n  data_files: /nowhere.jsonl\n"
                    "output_type: multiple_choice\ntest_split: train\n")  # fmt: skip
    assert_one_sentence(
        run_cli("eval", "smollm2", "--task-file", str(task), timeout=300),
        "lm-eval could not load the tasks",
    )
