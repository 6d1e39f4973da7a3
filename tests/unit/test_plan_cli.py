"""`llmkit plan` on the command line: output, JSON shape, chart, and one-sentence errors."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import typer
from typer.testing import CliRunner

from llmkit.cli.plan import register
from llmkit.errors import InvalidParameterError, LlmkitError, MissingExtraError, ModelNotFoundError


@pytest.fixture(autouse=True)
def empty_home(tmp_path, monkeypatch):
    monkeypatch.setenv("LLMKIT_HOME", str(tmp_path / "home"))


@pytest.fixture
def app() -> typer.Typer:
    application = typer.Typer()
    register(application)
    return application


def invoke(app, *args: str):
    return CliRunner().invoke(app, ["plan", *args], env={"COLUMNS": "240"})


SLIDE = [
    "llama-3.2-1b",
    "--task",
    "full",
    "--dtype",
    "fp32",
    "--batch-size",
    "32",
    "--seq-len",
    "128",
]


def test_slide_example_table_shows_parts_verdict_and_advice(app):
    result = invoke(app, *SLIDE, "--device", "T4")
    assert result.exit_code == 0, result.output
    for text in (
        "1,235,814,400",
        "gradients",
        "optimizer states",
        "activations",
        "logits",
        "does not fit",
        "fits",
    ):
        assert text in result.output
    assert "what would make it fit" in result.output


def test_explain_shows_formulas(app):
    result = invoke(app, *SLIDE, "--explain")
    assert "1,235,814,400 parameters × 4 B (fp32)" in " ".join(result.output.split())


def test_json_output_shape(app):
    result = invoke(
        app, *SLIDE, "--device", "T4", "--json", "--tokens", "2T", "--utilization", "0.5"
    )
    data = json.loads(result.output)
    assert set(data) >= {
        "model",
        "request",
        "memory",
        "device",
        "verdict",
        "suggestions",
        "budget",
        "warnings",
    }
    assert data["model"]["parameters"] == 1_235_814_400
    parts = {part["key"]: part["bytes"] for part in data["memory"]["parts"]}
    assert parts["weights"] == 4 * 1_235_814_400
    assert sum(parts.values()) == pytest.approx(data["memory"]["total_bytes"], abs=len(parts))
    assert data["verdict"]["status"] == "does not fit"
    assert all({"change", "total_bytes", "fits"} <= set(item) for item in data["suggestions"])
    assert data["budget"]["tokens_per_parameter"] == pytest.approx(2e12 / 1_235_814_400, rel=1e-3)


def test_training_budget_text(app):
    result = invoke(app, "llama-3.1-405b", "--tokens", "15T", "--device", "H100", "--gpus", "16000")
    assert result.exit_code == 0, result.output
    assert "tokens per parameter" in result.output
    assert "Chinchilla" in result.output


def test_catalog_list(app):
    result = CliRunner().invoke(app, ["plan", "--list", "--json"])
    names = {row["name"] for row in json.loads(result.output)}
    assert {
        "llama-3.2-1b",
        "qwen2.5-72b",
        "gemma-3-27b",
        "smollm2-135m",
        "phi-4",
        "mistral-7b",
    } <= names


def test_chart_is_written(app, tmp_path):
    pytest.importorskip("matplotlib")
    target = tmp_path / "plan.png"
    result = invoke(app, *SLIDE, "--chart", str(target))
    assert result.exit_code == 0, result.output
    assert target.read_bytes()[:4] == b"\x89PNG"


def test_chart_without_matplotlib_names_the_extra(app, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # makes `import matplotlib` fail
    result = invoke(app, *SLIDE, "--chart", str(tmp_path / "plan.png"))
    assert isinstance(result.exception, MissingExtraError)
    assert "llmkit[plot]" in str(result.exception)


@pytest.mark.parametrize(
    ("args", "error", "message"),
    [
        (["llama-3.2-1bb"], ModelNotFoundError, "llama-3.2-1b"),
        (["llama-3.2-1b", "--device", "T5"], InvalidParameterError, "Unknown device"),
        (["llama-3.2-1b", "--batch-size", "-1"], InvalidParameterError, "at least 1"),
        (["llama-3.2-1b", "--task", "train"], InvalidParameterError, "Unknown task"),
        ([], InvalidParameterError, "Name a model"),
    ],
)
def test_bad_input_raises_user_errors(app, args, error, message):
    result = invoke(app, *args)
    assert isinstance(result.exception, error)
    assert message in str(result.exception)


def test_cli_errors_are_one_line_without_traceback(tmp_path):
    completed = subprocess.run(
        [sys.executable, "-m", "llmkit", "plan", "qwen2.5-7bb", "--device", "T4"],
        capture_output=True,
        text=True,
        env={"LLMKIT_HOME": str(tmp_path), "PATH": "/usr/bin:/bin", "COLUMNS": "200"},
        check=False,
    )
    assert completed.returncode != 0
    assert "Traceback" not in completed.stderr
    assert "Did you mean" in completed.stderr and "qwen2.5-7b" in completed.stderr


def test_errors_are_llmkit_errors():
    assert issubclass(MissingExtraError, LlmkitError)
