"""Parameter counts come from the architecture: exact known figures, and PyTorch's own count."""

from __future__ import annotations

import json
import re

import pytest

from llmkit.errors import InvalidModelFileError, ModelNotFoundError
from llmkit.plan.catalog import catalog, closest_catalog_names, find_catalog_entry, normalize_name
from llmkit.plan.resolve import resolve_model
from llmkit.plan.spec import spec_from_hf_config


@pytest.fixture(autouse=True)
def empty_home(tmp_path, monkeypatch):
    monkeypatch.setenv("LLMKIT_HOME", str(tmp_path / "home"))


@pytest.mark.parametrize(
    ("name", "parameters"),
    [
        ("llama-3.2-1b", 1_235_814_400),  # tied embeddings, GQA 32/8: not "1B"
        ("smollm2-135m", 134_515_008),
        ("qwen2.5-0.5b", 494_032_768),  # q/k/v biases
        ("llama-3.1-8b", 8_030_261_248),  # untied LM head
        ("mistral-7b", 7_248_023_552),
        ("gemma-3-270m", 268_098_176),  # four norms per layer, q/k norms, head_dim 256
        ("qwen3-0.6b", 596_049_920),
        ("mixtral-8x7b", 46_702_792_704),
    ],
)
def test_parameter_counts_match_the_published_figures(name, parameters):
    assert catalog()[name].spec().parameters == parameters


def test_mixture_of_experts_counts_active_parameters():
    spec = catalog()["qwen3-30b-a3b"].spec()
    assert spec.parameters == 30_532_122_624
    assert 3.3e9 < spec.active_parameters < 3.4e9  # "A3B": about 3.3 B active per token


def _transformers_parameter_count(name: str) -> int:
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    config = dict(catalog()[name].config)
    hf_config = transformers.AutoConfig.for_model(config.pop("model_type"), **config)
    with torch.device("meta"):  # shapes only: no memory, no initialisation
        model = transformers.AutoModelForCausalLM.from_config(hf_config)
    return sum(parameter.numel() for parameter in model.parameters())


# One small model of each architecture family in the catalog.
@pytest.mark.torch
@pytest.mark.parametrize(
    "name",
    ["smollm2-135m", "qwen2.5-0.5b", "qwen3-0.6b", "gemma-3-270m", "phi-4-mini", "tinyllama-1.1b"],
)
def test_spec_matches_transformers_parameter_count(name):
    assert catalog()[name].spec().parameters == _transformers_parameter_count(name)


@pytest.mark.torch
@pytest.mark.slow
def test_every_catalog_entry_matches_transformers_parameter_count():
    for name, entry in catalog().items():
        assert entry.spec().parameters == _transformers_parameter_count(name), name


@pytest.mark.parametrize(
    ("typed", "canonical"),
    [
        ("meta-llama/Llama-3.2-1B-Instruct", "llama-3.2-1b"),
        ("Llama 3.2 1B", "llama-3.2-1b"),
        ("llama3.2:1b", "llama-3.2-1b"),
        ("Qwen/Qwen2.5-7B-Instruct", "qwen2.5-7b"),
        ("gemma3-1b", "gemma-3-1b"),
        ("google/gemma-3-270m-it", "gemma-3-270m"),
    ],
)
def test_catalog_names_are_found_however_they_are_spelled(typed, canonical):
    entry = find_catalog_entry(typed)
    assert entry is not None, normalize_name(typed)
    assert entry.name == canonical


def test_unknown_names_suggest_the_closest_catalog_names():
    assert "llama-3.2-1b" in closest_catalog_names("llama-3.2-1bb")
    with pytest.raises(ModelNotFoundError, match=re.escape("llama-3.1-8b")):
        resolve_model("llama-3.1-8bx")


def test_hf_folder_is_planned_from_its_config(tmp_path):
    folder = tmp_path / "my-model"
    folder.mkdir()
    config = {**catalog()["qwen2.5-0.5b"].config, "torch_dtype": "bfloat16"}
    (folder / "config.json").write_text(json.dumps(config))
    spec = resolve_model(str(folder))
    assert spec.parameters == 494_032_768
    assert spec.native_dtype == "bfloat16"


def test_hf_config_without_llama_keys_is_a_clear_error(tmp_path):
    folder = tmp_path / "gpt2ish"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "gpt2", "n_embd": 768}))
    with pytest.raises(InvalidModelFileError, match="lacks hidden_size"):
        resolve_model(str(folder))


def test_missing_file_is_reported():
    with pytest.raises(InvalidModelFileError, match="does not exist"):
        resolve_model("./nothing-here.gguf")


def test_multimodal_config_contributes_its_text_model():
    text = catalog()["gemma-3-4b"].config
    spec = spec_from_hf_config(
        {"model_type": "gemma3", "text_config": text}, name="g", source="test"
    )
    assert spec.parameters == catalog()["gemma-3-4b"].spec().parameters


def test_sliding_window_layers_keep_a_shorter_kv_cache():
    spec = catalog()["gemma-3-1b"].spec()
    lengths = spec.kv_layers_and_lengths(32768)
    assert lengths.count(32768) == spec.layers // 6  # every sixth layer is global
    assert set(lengths) == {512, 32768}
