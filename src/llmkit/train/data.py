"""Training data: read JSONL files and check every line before any training starts.

Three row formats are accepted: `{"messages": [...]}` (chat, optional system, multi-turn; with
an optional `"tools": [...]` list, assistant turns may hold `tool_calls` and `role: "tool"` turns
the calls' results, as `llmkit agent --record` writes them),
`{"prompt": ..., "completion": ...}` (one user turn, one answer) and `{"text": ...}` (plain text,
trained on in full). Every problem is reported with its file and line, all of them at once.

A row may hold at most MAX_ROW_BYTES (1 MiB, about 250,000 tokens, far beyond any context a
fine-tune trains on). Longer lines are refused before they are decoded or tokenized, and are never
read into memory whole, so a hostile file cannot exhaust memory or crash the tokenizer.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from llmkit.errors import LlmkitError
from llmkit.messages import ROLES

MAX_REPORTED_PROBLEMS = 10
MAX_ROW_BYTES = 1024 * 1024
_SKIP_BLOCK = 1024 * 1024


class DataError(LlmkitError):
    """A training file that cannot be used as it is; the message lists file:line problems."""

    exit_code = 2


@dataclass(frozen=True)
class Example:
    """One training row: a conversation, or plain text trained on in full."""

    source: str  # "file:line", for messages about this row
    messages: tuple[dict[str, Any], ...] = ()
    text: str | None = None
    tools: tuple[dict[str, Any], ...] | None = None  # the functions a tool conversation could call

    @property
    def has_assistant_turn(self) -> bool:
        return self.text is not None or any(m["role"] == "assistant" for m in self.messages)


def _problem_with_messages(messages: Any) -> str | None:
    if not isinstance(messages, list) or not messages:
        return "'messages' must be a non-empty list"
    for index, message in enumerate(messages):
        if not isinstance(message, dict):
            return f"message {index} is not an object"
        role, content = message.get("role"), message.get("content")
        if role not in ROLES:
            return f"message {index} has role {role!r}; use one of {', '.join(ROLES)}"
        calls = message.get("tool_calls")
        if calls is not None:
            if role != "assistant" or not isinstance(calls, list):
                return f"message {index}: only an assistant turn may hold a list of 'tool_calls'"
            if any(_problem_with_call(call) for call in calls):
                return (
                    f"message {index} has a tool call that is not "
                    '{"function": {"name": ..., "arguments": {...}}}'
                )
            if content is None:
                continue
        if not isinstance(content, str):
            return f"message {index} ({role}) needs a string 'content'"
    return None


def _problem_with_call(call: Any) -> bool:
    function = call.get("function") if isinstance(call, dict) else None
    if not isinstance(function, dict) or not isinstance(function.get("name"), str):
        return True
    arguments = function.get("arguments", {})
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments)
        except ValueError:
            return True
    return not isinstance(arguments, dict)


_KEPT = ("role", "content", "tool_calls", "tool_call_id", "name")


def parse_row(row: Any, source: str) -> Example:
    """One decoded JSON value as an Example, or DataError naming what is wrong with it."""
    if not isinstance(row, dict):
        raise DataError(f"{source}: expected a JSON object, got {type(row).__name__}")
    if "messages" in row:
        problem = _problem_with_messages(row["messages"])
        if problem:
            raise DataError(f"{source}: {problem}")
        tools = row.get("tools")
        if tools is not None and not (
            isinstance(tools, list) and all(isinstance(t, dict) for t in tools)
        ):
            raise DataError(f"{source}: 'tools' must be a list of function schemas")
        messages = tuple(
            {key: m[key] for key in _KEPT if m.get(key) is not None}
            | {"content": m.get("content") or ""}
            for m in row["messages"]
        )
        return Example(source, messages=messages, tools=tuple(tools) if tools else None)
    if "prompt" in row or "completion" in row:
        prompt, completion = row.get("prompt"), row.get("completion")
        if not isinstance(prompt, str) or not isinstance(completion, str):
            raise DataError(f"{source}: 'prompt' and 'completion' must both be strings")
        if not completion.strip():
            raise DataError(f"{source}: 'completion' is empty")
        messages = (
            {"role": "user", "content": prompt},
            {"role": "assistant", "content": completion},
        )
        return Example(source, messages=messages)
    if "text" in row:
        if not isinstance(row["text"], str) or not row["text"].strip():
            raise DataError(f"{source}: 'text' must be a non-empty string")
        return Example(source, text=row["text"])
    raise DataError(
        f"{source}: no 'messages', 'prompt'/'completion' or 'text' key (found: {', '.join(row) or 'none'})"
    )


def read_jsonl(path: str | Path) -> list[Example]:
    """Every row of a JSONL file, or one DataError listing the problems (file:line: problem)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise DataError(f"The data file {path} does not exist.")
    examples: list[Example] = []
    problems: list[str] = []
    with path.open("rb") as handle:
        for number, raw in _bounded_lines(handle):
            source = f"{path}:{number}"
            if raw is None:
                problems.append(
                    f"{source}: the row is longer than {MAX_ROW_BYTES:,} bytes, the limit for one "
                    "training row; split it into shorter rows"
                )
                continue
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as error:
                problems.append(f"{source}: not UTF-8 text (byte {error.start + 1})")
                continue
            if not line.strip():
                continue
            try:
                examples.append(parse_row(json.loads(line), source))
            except json.JSONDecodeError as error:
                problems.append(f"{source}: invalid JSON ({error.msg}, column {error.colno})")
            except RecursionError:
                problems.append(f"{source}: the JSON nests too deeply")
            except DataError as error:
                problems.append(str(error))
    raise_problems(problems)
    if not examples:
        raise DataError(f"The data file {path} has no rows.")
    if not any(example.has_assistant_turn for example in examples):
        raise DataError(f"{path} has no assistant turns, so there is nothing to learn.")
    return examples


def _bounded_lines(handle: BinaryIO) -> Iterator[tuple[int, bytes | None]]:
    """(line number, bytes) for each line; None for a line over MAX_ROW_BYTES, skipped unread."""
    number = 0
    while True:
        line = handle.readline(MAX_ROW_BYTES + 1)
        if not line:
            return
        number += 1
        if len(line) <= MAX_ROW_BYTES or (line.endswith(b"\n") and len(line) == MAX_ROW_BYTES + 1):
            yield number, line
            continue
        # Too long: skip the rest of the line in bounded blocks rather than reading it whole.
        while not line.endswith(b"\n"):
            line = handle.readline(_SKIP_BLOCK)
            if not line:
                break
        yield number, None


def raise_problems(problems: list[str]) -> None:
    """One DataError for a list of problems (the first few shown), or nothing when there are none."""
    if not problems:
        return
    shown = problems[:MAX_REPORTED_PROBLEMS]
    more = len(problems) - len(shown)
    tail = f"\n  … and {more} more" if more > 0 else ""
    noun = "problem" if len(problems) == 1 else "problems"
    raise DataError(
        f"The training data has {len(problems)} {noun}; nothing was started:\n  "
        + "\n  ".join(shown)
        + tail
    )


def split_for_eval(
    examples: list[Example], fraction: float, seed: int
) -> tuple[list[Example], list[Example]]:
    """A seeded random split into (train, eval); at least one row on each side."""
    import random

    if not 0 < fraction < 1:
        raise DataError(f"--eval-split must be between 0 and 1, not {fraction}.")
    if len(examples) < 2:
        raise DataError("--eval-split needs at least two rows of data.")
    order = list(range(len(examples)))
    random.Random(seed).shuffle(order)
    count = min(len(examples) - 1, max(1, round(len(examples) * fraction)))
    held_out = set(order[:count])
    train = [e for i, e in enumerate(examples) if i not in held_out]
    return train, [e for i, e in enumerate(examples) if i in held_out]
