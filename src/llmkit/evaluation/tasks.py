"""The tasks `llmkit eval` runs, all from local files, turned into lm-eval task configs.

- Multiple choice: a JSONL file, one question a line: {"question": ..., "choices": [...],
  "answer": index}. Each choice is scored as a continuation of "Question: ...\\nAnswer:";
  `acc` counts the questions whose right answer has the highest log-probability, `acc_norm`
  the same with each log-probability divided by the answer's length in bytes (so long answers
  are not penalised for having more tokens).
- Perplexity: a plain text file, scored whole in windows of the context length.
- A user's own lm-eval YAML task, passed to lm-eval as it is.

The first two become inline lm-eval configs reading the file through the `datasets` library's
local json and text loaders, so nothing is fetched from a hub.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmkit.errors import InvalidParameterError

TASK_DIR = Path(__file__).parent / "tasks"
# Built-in multiple-choice sets, shipped with the package: name -> file in TASK_DIR.
BUILTIN_TASKS = {"llmkit-facts": "facts.jsonl"}
DEFAULT_TASK = "llmkit-facts"
PROMPT = "Question: {{question}}\nAnswer:"


@dataclass(frozen=True)
class TaskSpec:
    """One task to run: what lm-eval is given, and where it came from."""

    name: str
    kind: str  # "choice", "perplexity" or "yaml"
    config: dict[str, Any] | str  # an inline lm-eval config, or the path of a YAML task


def resolve_tasks(
    tasks: list[str], task_files: list[Path], perplexity: list[Path]
) -> list[TaskSpec]:
    """Every task named on the command line; the built-in set when none is."""
    names = tasks if tasks or task_files or perplexity else [DEFAULT_TASK]
    specs = [choice_task(_choice_file(name)) for name in names]
    specs += [yaml_task(path) for path in task_files]
    specs += [perplexity_task(path) for path in perplexity]
    seen: set[str] = set()
    for spec in specs:
        if spec.name in seen:
            raise InvalidParameterError(f"The task '{spec.name}' is named twice.")
        seen.add(spec.name)
    return specs


def _choice_file(name: str) -> Path:
    if name in BUILTIN_TASKS:
        return TASK_DIR / BUILTIN_TASKS[name]
    path = Path(name).expanduser()
    if path.suffix == ".jsonl" and path.is_file():
        return path
    if path.suffix == ".jsonl":
        raise InvalidParameterError(f"No such task file: {name}.")
    known = ", ".join(sorted(BUILTIN_TASKS))
    raise InvalidParameterError(
        f"Unknown task '{name}': give a built-in task ({known}) or a multiple-choice .jsonl file "
        "(an lm-eval YAML task goes to --task-file)."
    )


def task_name(path: Path) -> str:
    """A task name lm-eval accepts, from a file name: 'My Quiz.jsonl' -> 'my_quiz'."""
    for name, file in BUILTIN_TASKS.items():
        if path == TASK_DIR / file:
            return name
    return re.sub(r"[^a-z0-9_-]+", "_", path.stem.lower()).strip("_") or "task"


def read_choice_file(path: Path) -> list[dict[str, Any]]:
    """The questions of a multiple-choice JSONL file, each checked, or one sentence saying which
    line is wrong and how."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as error:
        raise InvalidParameterError(f"{path} is not UTF-8 text ({error.reason}).") from error
    except OSError as error:
        raise InvalidParameterError(f"Cannot read {path}: {error.strerror}.") from error
    questions = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{path}, line {number}"
        try:
            item = json.loads(line)
        except json.JSONDecodeError as error:
            raise InvalidParameterError(f"{where} is not valid JSON ({error.msg}).") from error
        questions.append(_checked_question(item, where))
    if not questions:
        raise InvalidParameterError(f"{path} holds no questions.")
    return questions


def _checked_question(item: Any, where: str) -> dict[str, Any]:
    if not isinstance(item, dict):
        raise InvalidParameterError(f"{where} must be a JSON object.")
    question, choices, answer = item.get("question"), item.get("choices"), item.get("answer")
    if not isinstance(question, str) or not question.strip():
        raise InvalidParameterError(f"{where}: 'question' must be a non-empty string.")
    if (
        not isinstance(choices, list)
        or len(choices) < 2
        or not all(isinstance(choice, str) and choice.strip() for choice in choices)
    ):
        raise InvalidParameterError(f"{where}: 'choices' must be a list of two or more strings.")
    if isinstance(answer, bool) or not isinstance(answer, int) or not 0 <= answer < len(choices):
        raise InvalidParameterError(
            f"{where}: 'answer' must be the index of the right choice, 0 to {len(choices) - 1}."
        )
    return {"question": question, "choices": choices, "answer": answer}


def choice_task(path: Path) -> TaskSpec:
    read_choice_file(path)  # every line checked here, so lm-eval never meets a bad one
    name = task_name(path)
    config = {
        "task": name,
        "dataset_path": "json",
        "dataset_kwargs": {"data_files": {"test": str(path.resolve())}},
        "test_split": "test",
        "output_type": "multiple_choice",
        "doc_to_text": PROMPT,
        "doc_to_choice": "choices",
        "doc_to_target": "answer",
        "metric_list": [
            {"metric": "acc", "aggregation": "mean", "higher_is_better": True},
            {"metric": "acc_norm", "aggregation": "mean", "higher_is_better": True},
        ],
        "metadata": {"version": 1.0},
    }
    return TaskSpec(name, "choice", config)


def perplexity_task(path: Path) -> TaskSpec:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise InvalidParameterError(f"{path} is not UTF-8 text ({error.reason}).") from error
    except OSError as error:
        raise InvalidParameterError(f"Cannot read {path}: {error.strerror}.") from error
    if not text.strip():
        raise InvalidParameterError(f"{path} is empty; there is no text to score.")
    name = f"perplexity_{task_name(path)}"
    config = {
        "task": name,
        "dataset_path": "text",
        # The whole file is one document: its perplexity, as the model reads it through.
        "dataset_kwargs": {"data_files": {"test": str(path.resolve())}, "sample_by": "document"},
        "test_split": "test",
        "output_type": "loglikelihood_rolling",
        "doc_to_text": "",
        "doc_to_target": "text",
        "metric_list": [
            {"metric": "word_perplexity"},
            {"metric": "byte_perplexity"},
            {"metric": "bits_per_byte"},
        ],
        "metadata": {"version": 1.0},
    }
    return TaskSpec(name, "perplexity", config)


def yaml_task(path: Path) -> TaskSpec:
    if not path.is_file():
        raise InvalidParameterError(f"No such task file: {path}.")
    if path.suffix not in (".yaml", ".yml"):
        raise InvalidParameterError(f"--task-file takes an lm-eval YAML task, not {path.name}.")
    return TaskSpec(path.stem, "yaml", str(path.resolve()))
