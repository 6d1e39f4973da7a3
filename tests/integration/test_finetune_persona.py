"""The demonstration fine-tune: SmolLM2 learns the persona in examples/finetune, and the exported
adapter, run by the llama.cpp engine over the unchanged base, states the name the base never did."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("peft")

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "finetune"
QUESTION = [{"role": "user", "content": "What are you called?"}]  # not a training question


def answer(model_name: str) -> tuple[str, str]:
    import llmkit

    with llmkit.load(model_name, context_length=256) as model:
        stream = model.stream_chat(QUESTION, temperature=0, max_tokens=40)
        for _ in stream:
            pass
        return stream.result.text, stream.result.finish_reason


@pytest.mark.slow
def test_persona_is_learned_and_runs_through_llama_cpp(fresh_home: Path) -> None:
    from llmkit.train import FinetuneConfig, finetune

    base_text, _ = answer("smollm2")
    assert "Quill" not in base_text
    result = finetune(
        FinetuneConfig(
            base="smollm2",
            data=str(EXAMPLES / "persona.jsonl"),
            eval_data=str(EXAMPLES / "persona-eval.jsonl"),
            out="quill",
            epochs=2,
            lr=2e-3,
            batch_size=8,
            max_length=96,
            lora_r=8,
            lora_alpha=16,
            exports=("adapter",),
        )
    )
    assert result.eval_after < result.eval_before / 4
    text, finish = answer("quill")
    assert "Quill" in text
    assert finish == "stop"  # it ended its turn with <|im_end|> instead of running on
