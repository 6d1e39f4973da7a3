"""The command line on the tiny model: help, store commands, run, and one-line errors."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from tests.helpers.cli import run_cli


def assert_clean_error(result, *fragments: str) -> None:
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    message = " ".join(result.stderr.split())
    assert message.startswith("Error:"), result.stderr
    for fragment in fragments:
        assert fragment in message


def test_help_lists_every_verb() -> None:
    result = run_cli("--help")
    assert result.returncode == 0
    for verb in ["list", "show", "import", "rm", "pull", "run", "chat"]:
        assert verb in result.stdout


@pytest.mark.parametrize("verb", ["run", "chat", "import", "pull", "show"])
def test_each_verb_explains_itself(verb: str) -> None:
    result = run_cli(verb, "--help")
    assert result.returncode == 0 and "Usage" in result.stdout


def test_import_list_show_rm(fresh_home: Path, tiny_gguf: Path) -> None:
    env = {"LLMKIT_HOME": str(fresh_home)}
    assert run_cli("import", str(tiny_gguf), "--name", "tiny", env=env).returncode == 0
    listed = json.loads(run_cli("list", "--json", env=env).stdout)
    assert "tiny" in [m["name"] for m in listed]
    shown = json.loads(run_cli("show", "tiny", "--json", env=env).stdout)
    assert shown["info"]["layers"] == 2 and shown["info"]["kv_heads"] == 2
    assert shown["info"]["eos_token"] == "<|im_end|>" and len(shown["sha256"]) == 64
    table = run_cli("show", "tiny", env=env).stdout
    for label in [
        "KV heads",
        "context length",
        "sha256",
        "end-of-turn token",
        "chat template",
        "license",
    ]:
        assert label in table
    assert run_cli("rm", "tiny", env=env).returncode == 0
    assert_clean_error(run_cli("show", "tiny", env=env), "Unknown model 'tiny'")


def test_raw_run_with_json_reports_usage(tiny_gguf: Path) -> None:
    result = run_cli("run", str(tiny_gguf), "hello", "--raw", "--json", "-t", "0", "-n", "5")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["usage"]["completion_tokens"] == 5 and data["finish_reason"] == "length"
    assert data["timing"]["time_to_first_token_s"] > 0


def test_prompt_from_stdin_matches_the_argument(tiny_gguf: Path) -> None:
    by_argument = run_cli("run", str(tiny_gguf), "hello there", "-t", "0", "-n", "6")
    by_stdin = run_cli("run", str(tiny_gguf), "-t", "0", "-n", "6", input="hello there")
    assert by_argument.returncode == by_stdin.returncode == 0
    assert by_argument.stdout == by_stdin.stdout


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["run", "smollm", "hi"], ["Unknown model 'smollm'", "Did you mean 'smollm2'"]),
        (["run", "TINY", "hi", "-t", "-1"], ["Invalid sampling parameter", "temperature"]),
        (["run", "TINY", "hi", "--top-p", "2"], ["top_p"]),
        (["run", "TINY", "hi", "--engine", "vllm"], ["Unknown engine 'vllm'"]),
        (["run", "TINY", "hi", "--context", "1000000"], ["at most 256 tokens"]),
        (["run", "TINY", "word " * 300], ["context window holds"]),
        (["run", "/nonexistent/model.gguf", "hi"], ["does not exist"]),
        (["import", "NOT_GGUF", "--name", "x"], ["not a GGUF model file"]),
        (["import", "TINY", "--name", "../escape"], ["not a valid model name"]),
        (["run", "TINY", "hi", "--template", "no-such-template"], ["neither a built-in template"]),
    ],
)
def test_bad_input_gives_one_clear_line(
    args: list[str], fragments: list[str], tiny_gguf: Path, tmp_path: Path
) -> None:
    not_gguf = tmp_path / "notes.gguf"
    not_gguf.write_text("just some notes, not weights")
    args = [
        str(tiny_gguf) if a == "TINY" else str(not_gguf) if a == "NOT_GGUF" else a for a in args
    ]
    assert_clean_error(run_cli(*args), *fragments)


def test_truncated_model_file_is_reported(tiny_gguf: Path, tmp_path: Path) -> None:
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(tiny_gguf.read_bytes()[:300_000])
    assert_clean_error(run_cli("run", str(cut), "hi"), "truncated")


def test_empty_prompt_is_refused(tiny_gguf: Path) -> None:
    assert_clean_error(run_cli("run", str(tiny_gguf), input="   "), "empty")


def test_missing_extra_names_the_extra_to_install(tiny_gguf: Path) -> None:
    # Simulate an install without the torch extra: importing torch fails.
    code = (
        f"import sys; sys.modules['torch'] = None; sys.argv = ['llmkit', 'run', {str(tiny_gguf)!r}, 'hi', '--engine', 'transformers'];"
        "from llmkit.cli.app import main; main()"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60
    )
    assert_clean_error(result, "needs the 'torch' extra", "pip install 'llmkit[torch]'")
