"""Every verb and sub-verb explains itself through the real CLI, and no verb can silently vanish."""

from __future__ import annotations

import importlib
import pkgutil
import subprocess
import sys

import pytest
import typer
from tests.helpers.cli import run_cli

import llmkit.cli
from llmkit.cli.app import VERB_MODULES, app


def _command_paths() -> list[tuple[str, ...]]:
    """Every command path in the CLI's tree: ("run",), ("template", "check"), ..."""
    root = typer.main.get_command(app)
    paths: list[tuple[str, ...]] = []

    def walk(command: object, path: tuple[str, ...]) -> None:
        children = getattr(command, "commands", {})
        for name, child in sorted(children.items()):
            paths.append((*path, name))
            walk(child, (*path, name))

    walk(root, ())
    return paths


COMMANDS = _command_paths()


def test_the_tree_holds_every_verb() -> None:
    verbs = {path[0] for path in COMMANDS}
    expected = {"list", "show", "import", "rm", "pull", "run", "chat", "plan", "doctor"}
    expected |= {"prompt", "template", "bench", "serve", "finetune"}
    assert expected <= verbs
    assert ("template", "check") in COMMANDS and ("template", "show") in COMMANDS


@pytest.mark.parametrize("path", COMMANDS, ids=" ".join)
def test_every_command_has_help(path: tuple[str, ...]) -> None:
    result = run_cli(*path, "--help")
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert f"Usage: python -m llmkit {' '.join(path)}" in " ".join(result.stdout.split())
    # More than the usage line and the option list: the command says what it does.
    described = [line for line in result.stdout.splitlines() if line.strip()]
    assert len(described) >= 3, result.stdout


def test_every_verb_module_is_registered() -> None:
    """A module in llmkit.cli that defines verbs but is missing from VERB_MODULES is a bug."""
    with_verbs = {
        f"llmkit.cli.{info.name}"
        for info in pkgutil.iter_modules(llmkit.cli.__path__)
        if hasattr(importlib.import_module(f"llmkit.cli.{info.name}"), "register")
    }
    assert with_verbs == set(VERB_MODULES)


def test_a_verb_module_that_fails_to_import_stops_the_cli() -> None:
    # None in sys.modules makes `import llmkit.cli.bench` raise ModuleNotFoundError, the error a
    # missing optional package would give. The CLI must not start without the verb.
    code = "import sys; sys.modules['llmkit.cli.bench'] = None; import llmkit.cli.app"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60
    )
    assert result.returncode != 0
    assert "llmkit.cli.bench" in result.stderr


def test_version_is_printed() -> None:
    import subprocess
    import sys

    import llmkit

    shown = subprocess.run(
        [sys.executable, "-m", "llmkit", "--version"], capture_output=True, text=True, check=True
    )
    assert shown.stdout.strip() == f"llmkit {llmkit.__version__}"
