"""`import llmkit` shows its public API, and only that, without importing the engines."""

from __future__ import annotations

import subprocess
import sys

import llmkit


def test_dir_lists_the_public_api_only() -> None:
    names = dir(llmkit)
    assert {"load", "Model", "SamplingParams", "ModelStore", "__version__"} <= set(names)
    assert not {"Any", "TYPE_CHECKING", "annotations", "importlib"} & set(names)
    assert names == sorted(llmkit.__all__)


def test_every_public_name_resolves() -> None:
    for name in llmkit.__all__:
        assert getattr(llmkit, name) is not None
    assert llmkit.load.__module__ == "llmkit.model"


def test_import_stays_lazy_and_star_import_works() -> None:
    code = (
        "import sys, llmkit; lazy = 'llmkit.model' not in sys.modules; "
        "from llmkit import *; print(lazy, load.__name__, SamplingParams.__name__)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.split() == ["True", "load", "SamplingParams"]


def test_library_refuses_the_roles_the_cli_refuses() -> None:
    import pytest
    from tests.helpers.fake_engine import FakeEngine

    from llmkit.errors import InvalidParameterError
    from llmkit.model import Model
    from llmkit.store.store import ModelManifest

    template = "{% for m in messages %}<{{ m.role }}>{{ m.content }}{% endfor %}<assistant>"
    manifest = ModelManifest(
        "fake", "/nowhere.gguf", "gguf", "0" * 64, 1, "test", info={"chat_template": template}
    )
    model = Model(manifest, FakeEngine({1: b"<end>"}, script=[1], end_of_generation=[1]))
    with pytest.raises(InvalidParameterError, match="role 'bogus'"):
        model.chat([{"role": "bogus", "content": "hi"}])
    # OpenAI's newer name for the system role reaches the template as "system".
    assert model.render_prompt([{"role": "developer", "content": "Be brief."}]).startswith(
        "<system>Be brief."
    )
