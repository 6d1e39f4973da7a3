"""The typed model description: read from manifests of any version, and the one KV-cache formula
that the engine's memory check and the planner share."""

from __future__ import annotations

import json

import pytest

from llmkit.plan.memory import estimate_memory
from llmkit.plan.planner import PlanRequest
from llmkit.plan.spec import spec_from_gguf, spec_from_model_info
from llmkit.store.gguf_meta import read_gguf_header
from llmkit.store.model_info import ModelInfo
from llmkit.store.store import ModelManifest, describe_gguf

GEMMA3_LIKE = ModelInfo(
    architecture="gemma3",
    layers=12,
    heads=4,
    kv_heads=1,
    head_dim=256,
    embedding_length=640,
    feed_forward_length=2048,
    vocab_size=1000,
    context_length=32768,
    sliding_window=512,
    global_layer_every=6,
)


def test_a_manifest_round_trips_through_json_with_typed_info() -> None:
    manifest = ModelManifest("m", "/m.gguf", "gguf", "0" * 64, 1, "test", info=GEMMA3_LIKE)
    again = ModelManifest.from_json(json.loads(json.dumps(manifest.to_json())))
    assert again.info == GEMMA3_LIKE
    assert again.info.head_dim == 256 and again.info.sliding_window == 512


def test_a_first_version_manifest_still_reads() -> None:
    # Written before head widths and windows were recorded, with a key no longer used.
    old = {"layers": 30, "heads": 9, "kv_heads": 3, "embedding_length": 576, "retired": 1}
    info = ModelInfo.from_dict(old)
    assert info.key_width == 64  # hidden / heads when the header gave no key length
    assert info.add_bos_token is True  # what the first version assumed
    assert info.special_tokens == {}


def test_sliding_window_layers_keep_only_the_window() -> None:
    full = 2 * 1 * 256 * 2 * 12 * 8192
    # 2 of 12 layers are global (every 6th); the other 10 keep 512 tokens.
    windowed = 2 * 1 * 256 * 2 * (2 * 8192 + 10 * 512)
    assert GEMMA3_LIKE.kv_cache_bytes(8192) == windowed < full


@pytest.mark.parametrize("context", [256, 4096, 32768])
def test_the_planner_and_the_engine_agree_on_the_kv_cache(context: int) -> None:
    spec = spec_from_model_info(GEMMA3_LIKE, name="g", source="test")
    request = PlanRequest(task="chat", context=context, batch_size=1, engine="llamacpp")
    planned = estimate_memory(spec, request.validated(spec)).part("kv_cache")
    assert planned == GEMMA3_LIKE.kv_cache_bytes(context)


def test_the_built_in_models_spec_comes_from_its_description(tiny_gguf) -> None:
    header = read_gguf_header(tiny_gguf)
    info, spec = describe_gguf(header), spec_from_gguf(header, name="tiny", source="test")
    assert (spec.layers, spec.heads, spec.kv_heads) == (info.layers, info.heads, info.kv_heads)
    assert spec.head_dim == info.key_width and spec.max_context == info.context_length
    assert spec.kv_width * 2 * 2 * spec.layers * 100 == info.kv_cache_bytes(100)


def test_a_description_without_sizes_cannot_be_planned() -> None:
    from llmkit.errors import InvalidModelFileError

    with pytest.raises(InvalidModelFileError, match="lacks layer, width or head counts"):
        spec_from_model_info(ModelInfo(architecture="x"), name="odd", source="test")
