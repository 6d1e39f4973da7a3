"""Batch plans (the same global batches for any number of processes) and packing."""

from __future__ import annotations

from pathlib import Path

import pytest

from llmkit.train.batches import BatchPlan, Row, collate, make_rows
from llmkit.train.masks import TokenizedExample


def example(length: int, start: int = 10) -> TokenizedExample:
    ids = tuple(range(start, start + length))
    return TokenizedExample(
        "t", ids, tuple([False] * (length // 2) + [True] * (length - length // 2))
    )


def test_packing_fits_rows_first_fit_without_exceeding_the_length() -> None:
    examples = [example(n) for n in (5, 7, 3, 9, 2)]
    rows = make_rows(examples, 10, packing=True)
    assert all(row.length <= 10 for row in rows)
    assert sorted(i for row in rows for i in row.examples) == [0, 1, 2, 3, 4]
    assert len(rows) < len(examples)
    assert len(make_rows(examples, 10, packing=False)) == 5


@pytest.mark.parametrize("world", [1, 2, 4])
def test_every_process_split_covers_the_same_global_batch(world: int) -> None:
    rows = [Row((i,), 4) for i in range(10)]
    reference = BatchPlan(rows, batch_size=4, grad_accum=1, world_size=1, epochs=2, seed=7)
    plan = BatchPlan(rows, batch_size=4 // world, grad_accum=1, world_size=world, epochs=2, seed=7)
    assert plan.total_steps == reference.total_steps == 6
    for step in range(plan.total_steps):
        dealt = sorted(
            i for rank in range(world) for micro in plan.micro_batches(step, rank) for i in micro
        )
        assert dealt == sorted(reference.step_rows(step))


def test_collate_restarts_positions_and_ignores_padding_and_prompts() -> None:
    import torch

    examples = [example(4), example(3, start=50)]
    batch = collate(examples, [Row((0, 1), 7), Row((1,), 3)], pad_id=0, torch=torch)
    assert batch["position_ids"].tolist() == [[0, 1, 2, 3, 0, 1, 2], [0, 1, 2, 0, 1, 2, 3]]
    # Trained tokens keep their id as the label; prompts, each example's first token and padding don't.
    assert batch["labels"].tolist() == [
        [-100, -100, 12, 13, -100, 51, 52],
        [-100, 51, 52, -100, -100, -100, -100],
    ]


def test_packed_rows_do_not_see_each_other(tiny_gguf: Path) -> None:
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from llmkit.train.sft import loss_sum

    model = transformers.AutoModelForCausalLM.from_pretrained(
        str(tiny_gguf.parent), gguf_file=tiny_gguf.name
    )
    examples = [example(6, start=20), example(5, start=40)]
    separate = sum(
        float(loss_sum(model, collate(examples, [Row((i,), len(examples[i]))], 0, torch)))
        for i in (0, 1)
    )
    packed = float(loss_sum(model, collate(examples, [Row((0, 1), 11)], 0, torch)))
    assert packed == pytest.approx(separate, rel=1e-5)
