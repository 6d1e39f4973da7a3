"""Engines: load weights, tokenize, evaluate tokens and sample. Chosen by name, imported lazily."""

from __future__ import annotations

from llmkit.errors import InvalidParameterError

ENGINE_NAMES = ("llamacpp", "transformers")


def check_engine_name(name: str) -> str:
    if name not in ENGINE_NAMES:
        raise InvalidParameterError(
            f"Unknown engine '{name}'; choose one of: {', '.join(ENGINE_NAMES)}."
        )
    return name
