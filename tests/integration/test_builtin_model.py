"""The built-in model (SmolLM2 135M Instruct) end to end: real weights, real template, real stops."""

import json

import pytest
from tests.helpers.cli import run_cli

import llmkit

FRANCE = "What is the capital of France?"


@pytest.fixture(scope="module")
def smollm2(builtin_model_path):
    with llmkit.load("smollm2") as model:
        yield model


def test_greedy_answer_names_paris_and_stops_at_the_end_of_turn() -> None:
    result = run_cli("run", "smollm2", FRANCE, "-t", "0", "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert "Paris" in data["text"]
    assert data["finish_reason"] == "stop" and data["stopped_by"] == "<|im_end|>"
    assert "<|im_end|>" not in data["text"] and "<|im_start|>" not in data["text"]


def test_streamed_terminal_output_has_no_special_tokens() -> None:
    result = run_cli("run", "smollm2", FRANCE, "-t", "0")
    assert result.returncode == 0 and "Paris" in result.stdout
    assert "<|im_" not in result.stdout


def test_ignore_eos_marks_where_the_model_would_stop() -> None:
    result = run_cli("run", "smollm2", "Say hi.", "-t", "0", "--ignore-eos", "-n", "60")
    assert result.returncode == 0, result.stderr
    assert "would stop: <|im_end|>" in result.stdout


def test_user_stop_string_is_never_printed(smollm2) -> None:
    full = smollm2.chat(FRANCE, temperature=0)
    word = full.split()[3]
    cut = smollm2.chat(FRANCE, temperature=0, stop=[word])
    assert word not in cut and full.startswith(cut)


def test_python_api_streams_and_tokenizes(smollm2) -> None:
    pieces = list(smollm2.chat([{"role": "user", "content": FRANCE}], stream=True, temperature=0))
    assert len(pieces) > 3 and "Paris" in "".join(pieces)
    assert smollm2.tokenize("<|im_start|>") == [1]
    assert (
        smollm2.generate("The capital of France is", temperature=0, max_tokens=3)
        .strip()
        .startswith("Paris")
    )


def test_system_prompt_replaces_the_default_one(smollm2) -> None:
    prompt = smollm2.render_prompt(
        smollm2.with_system([{"role": "user", "content": "hi"}], "You are Bob.")
    )
    assert prompt.startswith("<|im_start|>system\nYou are Bob.<|im_end|>\n")
    assert "SmolLM" not in prompt


@pytest.mark.slow
@pytest.mark.torch
def test_both_engines_agree_on_greedy_answers(smollm2) -> None:
    """Q4_1 weights: llama.cpp computes with them quantized, PyTorch de-quantized, so only prompts
    whose top choices are not near-ties are compared (many others agree too, a few do not)."""
    pytest.importorskip("torch")
    with llmkit.load("smollm2", engine="transformers") as torch_model:
        for prompt in ["Name a primary color.", "What is 2+2?"]:
            kwargs = {"temperature": 0, "max_tokens": 12}
            a = smollm2.stream_chat([{"role": "user", "content": prompt}], **kwargs)
            b = torch_model.stream_chat([{"role": "user", "content": prompt}], **kwargs)
            list(a), list(b)
            assert a.result.token_ids == b.result.token_ids, prompt
        assert torch_model.generate(
            "The capital of France is", temperature=0, max_tokens=3
        ) == smollm2.generate("The capital of France is", temperature=0, max_tokens=3)


def test_llamacpp_engine_lists_the_chat_markers_as_special(smollm2) -> None:
    facts = smollm2.engine.tokenizer_facts
    start, end = smollm2.tokenize("<|im_start|>")[0], smollm2.tokenize("<|im_end|>")[0]
    assert {start, end} <= facts.special_ids
    assert not set(smollm2.tokenize(" Paris")) & facts.special_ids
