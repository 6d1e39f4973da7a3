"""`llmkit tune`'s choice, its inputs, and the tuned variant in the store."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llmkit.errors import InvalidParameterError
from llmkit.store.store import ModelStore
from llmkit.tuning.measure import agreement
from llmkit.tuning.tune import Candidate, TuneReport, _judge, parse_bytes, parse_fraction


def candidate(
    fmt: str, prompt: float, generation: float, loss: float, size: int = 100
) -> Candidate:
    return Candidate(
        format=fmt, size_bytes=size, prompt_tokens_per_second=prompt * 100,
        generation_tokens_per_second=generation * 100, perplexity=20 * (1 + loss), agreement=1.0,
        original=fmt == "Q4_1", quality_loss=loss, prompt_speedup=prompt,
        generation_speedup=generation,
    )  # fmt: skip


def report(*candidates: Candidate, loss: float = 0.01, budget: int | None = None) -> TuneReport:
    result = TuneReport("m", "Q4_1", loss, budget, list(candidates))
    _judge(result)
    return result


def test_the_fastest_format_within_the_quality_bound_is_chosen() -> None:
    chosen = report(
        candidate("Q4_1", 1, 1, 0),
        candidate("Q8_0", 2.1, 1.05, 0.005),
        candidate("Q6_K", 2.4, 1.2, 0.024),  # faster, but perplexity +2.4%
        candidate("Q4_0", 3, 1.5, 0.2),
    )
    assert chosen.chosen == "Q8_0"
    assert "2.10x prompt" in chosen.reason and "+0.5%" in chosen.reason
    notes = {c.format: c.note for c in chosen.candidates}
    assert notes["Q6_K"] == "perplexity +2.4%" and notes["Q8_0"] == "chosen"


def test_a_looser_bound_or_a_memory_budget_changes_the_choice() -> None:
    formats = (candidate("Q4_1", 1, 1, 0), candidate("Q8_0", 2.1, 1.05, 0.005, size=150))
    faster = candidate("Q6_K", 2.4, 1.2, 0.024, size=140)
    assert report(*formats, faster, loss=0.03).chosen == "Q6_K"
    assert report(*formats, faster, loss=0.03, budget=120).chosen is None


def test_the_original_stays_when_nothing_is_clearly_faster() -> None:
    kept = report(candidate("Q4_1", 1, 1, 0), candidate("Q8_0", 1.02, 1.01, 0.001))
    assert kept.chosen is None and "the original stays" in kept.reason


def test_pareto_marks_what_no_other_candidate_beats_on_every_count() -> None:
    result = report(
        candidate("Q4_1", 1, 1, 0),
        candidate("Q8_0", 2, 1, 0.003),
        candidate("Q5_0", 1.5, 0.9, 0.004),  # slower and worse than Q8_0
    )
    assert {c.format: c.pareto for c in result.candidates} == {
        "Q4_1": True, "Q8_0": True, "Q5_0": False,
    }  # fmt: skip


def test_agreement_counts_tokens_up_to_the_first_difference() -> None:
    reference = [[1, 2, 3, 4], [5, 6]]
    assert agreement(reference, reference) == 1.0
    assert agreement([[1, 2, 9, 4], [5, 6]], reference) == pytest.approx(4 / 6)
    assert agreement([[], [5]], reference) == pytest.approx(1 / 6)


@pytest.mark.parametrize(
    ("text", "value"), [("1%", 0.01), ("0.5 %", 0.005), ("0.02", 0.02), ("0", 0.0)]
)
def test_quality_loss_is_read_as_a_fraction(text: str, value: float) -> None:
    assert parse_fraction(text) == pytest.approx(value)


@pytest.mark.parametrize("text", ["-1%", "150%", "lots", "2"])
def test_a_bad_quality_loss_is_one_clear_error(text: str) -> None:
    with pytest.raises(InvalidParameterError):
        parse_fraction(text)


def test_memory_budgets_take_units() -> None:
    assert parse_bytes("500MB") == 500_000_000
    assert parse_bytes("1.5 GiB") == int(1.5 * 2**30)
    with pytest.raises(InvalidParameterError, match="not a size"):
        parse_bytes("500 parsecs")
    with pytest.raises(InvalidParameterError, match="at least one byte"):
        parse_bytes("0")


def test_a_variant_is_used_until_undone_and_the_original_keeps_its_name(
    tiny_gguf: Path, tmp_path: Path
) -> None:
    store = ModelStore(tmp_path / "home")
    store.import_model(tiny_gguf, "tiny")
    faster = tmp_path / "faster.gguf"
    faster.write_bytes(tiny_gguf.read_bytes())
    store.set_variant("tiny", faster, "Q8_0", reason="2x prompt speed")
    tuned = store.get("tiny")
    assert tuned.weights_path.name == "variant-q8_0.gguf" and tuned.weights_path.exists()
    assert not faster.exists()  # moved into the store, not copied
    assert store.get("tiny:original").weights_path == Path(tuned.path)
    assert store.get("tiny:latest").weights_path == tuned.weights_path
    manifest = json.loads((tuned.weights_path.parent / "manifest.json").read_text())
    assert manifest["variant"]["format"] == "Q8_0"
    undone = store.set_variant("tiny", None, None)
    assert undone.variant is None and undone.weights_path == Path(tuned.path)
    assert not tuned.weights_path.exists()  # the variant's file is gone, the original stays
    assert Path(tuned.path).exists()
