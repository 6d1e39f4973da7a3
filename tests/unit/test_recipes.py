"""Recipes in Modelfile syntax: read, written back, stored over a base without copying it."""

from __future__ import annotations

from pathlib import Path

import pytest

from llmkit.errors import InvalidModelFileError, InvalidParameterError
from llmkit.store.recipes import modelfile_of, parse_modelfile
from llmkit.store.store import ModelStore

RECIPE = '''# An astronomer's assistant
FROM smollm2
PARAMETER temperature 0.2
PARAMETER num_predict 64
PARAMETER stop "<|im_end|>"
PARAMETER stop "Observer:"
SYSTEM """You answer questions about the sky
in one sentence."""
MESSAGE user What is a parsec?
MESSAGE assistant "About 3.26 light-years."
LICENSE Apache-2.0
'''


def test_a_modelfile_is_read_into_a_recipe() -> None:
    recipe = parse_modelfile(RECIPE)
    assert recipe.base == "smollm2"
    assert recipe.parameters == {
        "temperature": 0.2, "max_tokens": 64, "stop": ["<|im_end|>", "Observer:"],
    }  # fmt: skip
    assert recipe.system == "You answer questions about the sky\nin one sentence."
    assert recipe.messages == [
        {"role": "user", "content": "What is a parsec?"},
        {"role": "assistant", "content": "About 3.26 light-years."},
    ]
    assert recipe.license == "Apache-2.0" and recipe.template is None


def test_paths_are_read_relative_to_the_recipe(tmp_path: Path) -> None:
    recipe = parse_modelfile("FROM ./weights/m.gguf\nADAPTER lora.gguf\n", folder=tmp_path)
    assert recipe.base == str(tmp_path / "weights" / "m.gguf")
    assert recipe.adapter == str(tmp_path / "lora.gguf")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("PARAMETER temperature 0.2\n", "no FROM line"),
        ("FROM smollm2\nRUN rm -rf /\n", "line 2: unknown instruction 'RUN'"),
        ("FROM smollm2\nPARAMETER warmth 3\n", "unknown PARAMETER 'warmth'"),
        ("FROM smollm2\nPARAMETER top_k many\n", "top_k must be an integer"),
        ("FROM smollm2\nPARAMETER temperature 99\n", "temperature"),
        ("FROM smollm2\nMESSAGE wizard hello\n", "MESSAGE needs a role"),
        ('FROM smollm2\nSYSTEM """never closed\n', "never closed"),
        ("FROM smollm2\nTEMPLATE {{ .Prompt }}\n", "Ollama Go template"),
        ("FROM smollm2\nSYSTEM\n", "SYSTEM needs a value"),
    ],
)
def test_a_bad_recipe_is_one_clear_error(text: str, message: str) -> None:
    with pytest.raises(InvalidParameterError, match=message):
        parse_modelfile(text)


def test_a_recipe_is_stored_over_its_base_and_written_back(tiny_gguf: Path, tmp_path: Path) -> None:
    store = ModelStore(tmp_path / "home")
    base = store.import_model(tiny_gguf, "tiny")
    recipe = parse_modelfile(RECIPE.replace("FROM smollm2", "FROM tiny"))
    made = store.create_recipe("astro", recipe)
    assert made.path == base.path and made.base == "tiny" and made.linked  # nothing copied
    assert made.system_prompt.startswith("You answer") and made.parameters["temperature"] == 0.2
    again = parse_modelfile(modelfile_of(store.get("astro")))
    assert (again.base, again.parameters, again.system, again.messages, again.license) == (
        "tiny", recipe.parameters, recipe.system, recipe.messages, recipe.license,
    )  # fmt: skip
    with pytest.raises(InvalidParameterError, match="already exists"):
        store.create_recipe("astro", recipe)
    with pytest.raises(InvalidParameterError, match="own base"):
        store.create_recipe("tiny", recipe)


def test_a_base_in_use_cannot_be_removed_before_its_recipes(
    tiny_gguf: Path, tmp_path: Path
) -> None:
    store = ModelStore(tmp_path / "home")
    store.import_model(tiny_gguf, "tiny")
    store.copy("tiny", "tiny-two")
    assert store.get("tiny-two").path == store.get("tiny").path
    with pytest.raises(InvalidParameterError, match="tiny-two uses the weights of 'tiny'"):
        store.remove("tiny")
    store.remove("tiny-two")
    store.remove("tiny")
    assert store.names() == []


def test_a_missing_adapter_is_refused(tiny_gguf: Path, tmp_path: Path) -> None:
    store = ModelStore(tmp_path / "home")
    store.import_model(tiny_gguf, "tiny")
    recipe = parse_modelfile("FROM tiny\nADAPTER /nowhere/lora.gguf\n")
    with pytest.raises(InvalidModelFileError, match="does not exist"):
        store.create_recipe("x", recipe)


def test_a_quoted_value_that_is_not_json_is_kept_as_written() -> None:
    # A stray backslash before the closing quote: no traceback, the text between the quotes.
    recipe = parse_modelfile('FROM smollm2\nSYSTEM "C:\\models\\"\n')
    assert recipe.system == "C:\\models\\"
