"""docs/planning.md shows the tool's real output: every `$ llmkit` example and the slide table's
figures are produced again here and compared, so the page cannot drift from the planner."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest
from tests.helpers.cli import run_cli

DOC = Path(__file__).resolve().parents[2] / "docs" / "planning.md"
ORDER = ("weights", "gradients", "optimizer", "activations", "logits", "overlap", "overhead")


def console_examples(text: str) -> list[tuple[str, list[str]]]:
    """(command, the output lines shown under it) for every `$ llmkit` line of a console block."""
    examples: list[tuple[str, list[str]]] = []
    for block in re.findall(r"```console\n(.*?)```", text, re.DOTALL):
        for line in block.splitlines():
            if line.startswith("$ "):
                examples.append((line[2:], []))
            elif examples and line.strip() != "...":
                examples[-1][1].append(line.rstrip())
    return examples


def marked_tables(text: str) -> list[tuple[str, list[str]]]:
    """(command, table rows) for every table after a `<!-- figures: llmkit ... -->` marker."""
    found = []
    for match in re.finditer(r"<!-- figures: (llmkit [^>]+?) -->\n\n?((?:\|.*\n)+)", text):
        found.append((match[1], match[2].splitlines()))
    return found


def run(command: str, tmp_path: Path) -> str:
    args = shlex.split(command)
    assert args[0] == "llmkit", command
    result = run_cli(*args[1:], env={"LLMKIT_HOME": str(tmp_path / "home")})
    assert result.returncode == 0, f"{command}\n{result.stderr}"
    return result.stdout


def is_subsequence(shown: list[str], actual: list[str]) -> tuple[bool, str]:
    """Whether every shown line appears in the actual output, in the same order."""
    position = 0
    for line in shown:
        try:
            position = actual.index(line, position) + 1
        except ValueError:
            return False, line
    return True, ""


TEXT = DOC.read_text()
EXAMPLES = console_examples(TEXT)
TABLES = marked_tables(TEXT)


def test_the_page_has_examples_to_check():
    assert len(EXAMPLES) >= 2 and all(lines for _, lines in EXAMPLES)
    assert TABLES, "the slide table lost its figures marker"


@pytest.mark.parametrize(("command", "shown"), EXAMPLES, ids=[c for c, _ in EXAMPLES])
def test_console_example_is_the_real_output(command, shown, tmp_path):
    actual = [line.rstrip() for line in run(command, tmp_path).splitlines()]
    ok, missing = is_subsequence(shown, actual)
    assert ok, (
        f"docs/planning.md shows a line `{command}` does not print:\n{missing}\n"
        + "\n".join(actual)
    )


@pytest.mark.parametrize(("command", "rows"), TABLES, ids=[c for c, _ in TABLES])
def test_slide_table_figures_are_the_real_figures(command, rows, tmp_path):
    memory = json.loads(run(command + " --json", tmp_path))["memory"]
    parts = {part["key"]: part["bytes"] for part in memory["parts"]}
    expected = [f"{parts[key] / 1e9:.2f}" for key in ORDER] + [f"{memory['total_bytes'] / 1e9:.2f}"]
    tool_column = " ".join(row.strip("|").split("|")[-1] for row in rows[2:])
    shown = [
        figure.replace("−", "-") for figure in re.findall(r"[−-]?\d+\.\d+(?= GB)", tool_column)
    ]
    assert shown == expected
    gib = re.search(r"\((\d+\.\d) GiB\)", tool_column)
    assert gib and gib[1] == f"{memory['total_bytes'] / 1024**3:.1f}"


def test_the_checker_notices_a_drifted_figure():
    drifted = TEXT.replace("12.19 GiB", "12.30 GiB")
    _, shown = console_examples(drifted)[0]
    assert "12.30 GiB" in "\n".join(shown)
    actual = [line.rstrip() for line in "\n".join(shown).replace("12.30", "12.19").splitlines()]
    assert not is_subsequence(shown, actual)[0]
