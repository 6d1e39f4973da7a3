"""Which rows each optimizer step sees, on which process, and how they become tensors.

The order depends only on the seed and the epoch, so a resumed run and a run split over several
processes see exactly the same global batches as one uninterrupted process.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from llmkit.train.masks import TokenizedExample

IGNORE = -100  # the label cross-entropy skips


@dataclass(frozen=True)
class Row:
    """One training sequence: a single example, or several packed end to end."""

    examples: tuple[int, ...]
    length: int


def make_rows(examples: Sequence[TokenizedExample], max_length: int, packing: bool) -> list[Row]:
    """One row per example, or (packing) examples packed first-fit into rows of max_length."""
    if not packing:
        return [Row((index,), len(example)) for index, example in enumerate(examples)]
    rows: list[list[int]] = []
    lengths: list[int] = []
    for index, example in enumerate(examples):
        for slot, used in enumerate(lengths):
            if used + len(example) <= max_length:
                rows[slot].append(index)
                lengths[slot] += len(example)
                break
        else:
            rows.append([index])
            lengths.append(len(example))
    return [Row(tuple(row), length) for row, length in zip(rows, lengths)]


@dataclass(frozen=True)
class BatchPlan:
    """Steps, and for each step the rows of every (process, micro-batch)."""

    rows: list[Row]
    batch_size: int  # rows per micro-batch, per process
    grad_accum: int
    world_size: int
    epochs: int
    seed: int
    max_steps: int | None = None

    @property
    def global_batch(self) -> int:
        return self.batch_size * self.grad_accum * self.world_size

    @property
    def steps_per_epoch(self) -> int:
        return max(1, -(-len(self.rows) // self.global_batch))

    @property
    def total_steps(self) -> int:
        return self.max_steps or self.steps_per_epoch * self.epochs

    def _order(self, epoch: int) -> list[int]:
        order = list(range(len(self.rows)))
        random.Random(self.seed * 1_000_003 + epoch).shuffle(order)
        return order

    def step_rows(self, step: int) -> list[int]:
        """Row indices of the global batch of an optimizer step (0-based)."""
        epoch, within = divmod(step, self.steps_per_epoch)
        order = self._order(epoch)
        return order[within * self.global_batch : (within + 1) * self.global_batch]

    def micro_batches(self, step: int, rank: int) -> list[list[int]]:
        """This process's micro-batches of a step; rows are dealt out round-robin by micro-batch."""
        rows = self.step_rows(step)
        result = []
        for micro in range(self.grad_accum):
            start = (micro * self.world_size + rank) * self.batch_size
            result.append(rows[start : start + self.batch_size])
        return result


def trained_targets(examples: Sequence[TokenizedExample], rows: Sequence[Row]) -> int:
    """Tokens the loss is computed on in these rows (each example's first token is never one)."""
    return sum(sum(examples[i].trained[1:]) for row in rows for i in row.examples)


def collate(
    examples: Sequence[TokenizedExample], rows: Sequence[Row], pad_id: int, torch: Any
) -> dict[str, Any]:
    """input_ids, labels and position_ids for a micro-batch, padded on the right.

    Positions restart at every packed example (and at the padding), and no attention mask is
    given: transformers then keeps packed examples from attending to each other, and causal
    attention already keeps real tokens from seeing the padding that follows them.
    """
    width = max(row.length for row in rows)
    input_ids, labels, positions = [], [], []
    for row in rows:
        ids: list[int] = []
        targets: list[int] = []
        position: list[int] = []
        for index in row.examples:
            example = examples[index]
            ids.extend(example.input_ids)
            # Never predict an example's first token from the end of the one packed before it.
            trained = (False, *example.trained[1:])
            targets.extend(t if keep else IGNORE for t, keep in zip(example.input_ids, trained))
            position.extend(range(len(example)))
        padding = width - len(ids)
        input_ids.append(ids + [pad_id] * padding)
        labels.append(targets + [IGNORE] * padding)
        position.extend(range(padding))
        positions.append(position)
    return {
        "input_ids": torch.tensor(input_ids, dtype=torch.long),
        "labels": torch.tensor(labels, dtype=torch.long),
        "position_ids": torch.tensor(positions, dtype=torch.long),
    }
