"""Every module imports, and the CLI starts without loading any heavy library."""

import importlib
import pkgutil
import subprocess
import sys

import pytest

import llmkit

HEAVY = ["torch", "transformers", "llama_cpp", "fastapi", "peft"]


def test_cli_starts_without_heavy_imports() -> None:
    code = f"import sys, llmkit.cli.app; print([m for m in {HEAVY!r} if m in sys.modules])"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"


@pytest.mark.parametrize(
    "name",
    sorted(
        m.name
        for m in pkgutil.walk_packages(llmkit.__path__, "llmkit.")
        if not m.name.endswith("__main__")
    ),
)
def test_every_module_imports(name: str) -> None:
    importlib.import_module(name)
