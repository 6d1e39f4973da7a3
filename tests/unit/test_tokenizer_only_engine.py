"""The weightless engine a remote-generating server tokenizes with: the same vocabulary facts as
the transformers engine, no weights in memory, and nothing it can evaluate."""

from __future__ import annotations

from pathlib import Path

import pytest

from llmkit.engines.base import EngineOptions
from llmkit.errors import InvalidParameterError

pytestmark = pytest.mark.torch


@pytest.fixture(scope="module")
def hf_folder(tiny_gguf: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("torch")
    from llmkit.engines.transformers import TransformersEngine
    from llmkit.store.store import ModelManifest

    manifest = ModelManifest("tiny", str(tiny_gguf), "gguf", "", 0, "test")
    engine = TransformersEngine(manifest, EngineOptions(device="cpu"))
    folder = tmp_path_factory.mktemp("tiny-hf")
    # Loaded from GGUF, the weights are plain floats already; saved as an ordinary HF folder.
    engine.model.hf_quantizer = None
    del engine.model.config.quantization_config
    engine.model.save_pretrained(folder)
    engine.tokenizer.save_pretrained(folder)
    engine.close()
    return folder


def _manifest(folder: Path):
    from llmkit.store.store import ModelManifest

    return ModelManifest("tiny-hf", str(folder), "hf", "", 0, "test")


def test_same_vocabulary_as_the_full_engine_without_weights(hf_folder: Path) -> None:
    from llmkit.engines.tokenizer_only import TokenizerOnlyEngine
    from llmkit.engines.transformers import TransformersEngine

    full = TransformersEngine(_manifest(hf_folder), EngineOptions(device="cpu"))
    light = TokenizerOnlyEngine(_manifest(hf_folder), EngineOptions(device="cpu"))
    assert light.tokenizer_facts == full.tokenizer_facts
    text = "hello there, Ünïcödé 😀"
    assert light.tokenize(text) == full.tokenize(text)
    ids = full.tokenize(text)
    assert [light.token_bytes(i) for i in ids] == [full.token_bytes(i) for i in ids]
    assert all(p.device.type == "meta" for p in light.model.parameters())
    full.close()
    with pytest.raises(InvalidParameterError, match="generates on an engine server"):
        light.new_context(1, 16)
    with pytest.raises(InvalidParameterError, match="generates on an engine server"):
        light.embed(ids)
