"""Token sampling over a logits vector, for engines without a native sampler (the torch engine).

The order follows llama.cpp's default chain (penalties, top-k, top-p, min-p, temperature, draw), so
the two engines mean the same thing by the same parameters. A token constraint (a compiled grammar)
masks the disallowed tokens first, so no later step can bring one back.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence

import numpy as np

from llmkit.engines.base import SamplingStage, TokenConstraint
from llmkit.errors import LlmkitError
from llmkit.params import SamplingParams


class LogitsSampler:
    """Implements the engine protocol's Sampler over `logits(output)`, the context's output rows."""

    def __init__(
        self,
        params: SamplingParams,
        history: Sequence[int],
        logits: Callable[[int], np.ndarray],
        constraint: TokenConstraint | None = None,
    ) -> None:
        self.params = params
        self.history = list(history)
        self.logits = logits
        self.constraint = constraint
        self.rng = np.random.default_rng(params.seed)

    def sample(self, output: int = -1) -> int:
        logits = np.array(self.logits(output), dtype=np.float64)
        if self.constraint is not None:
            _mask_disallowed(logits, self.constraint.allowed())
        self._apply_penalties(logits)
        token = int(np.argmax(logits)) if self.params.greedy else self._draw(logits)
        self.history.append(token)
        if self.constraint is not None:
            self.constraint.accept(token)
        return token

    def _apply_penalties(self, logits: np.ndarray) -> None:
        params = self.params
        if params.repeat_last_n == 0 or (
            params.repeat_penalty == 1.0
            and params.presence_penalty == 0.0
            and params.frequency_penalty == 0.0
        ):
            return
        counts = Counter(self.history[-params.repeat_last_n :])
        if not counts:
            return
        ids = np.fromiter(counts.keys(), dtype=np.int64)
        frequency = np.fromiter(counts.values(), dtype=np.float64)
        values = logits[ids]
        values = np.where(
            values > 0, values / params.repeat_penalty, values * params.repeat_penalty
        )
        values -= frequency * params.frequency_penalty + params.presence_penalty
        logits[ids] = values

    def _draw(self, logits: np.ndarray) -> int:
        last = self._stages(logits)[-1]
        return int(self.rng.choice(last.ids, p=last.probabilities))

    def explain(self, output: int = -1) -> list[SamplingStage]:
        logits = np.array(self.logits(output), dtype=np.float64)
        if self.constraint is not None:
            _mask_disallowed(logits, self.constraint.allowed())
        self._apply_penalties(logits)
        if self.params.greedy:
            best = int(np.argmax(logits))
            return [SamplingStage("greedy", np.array([best]), np.array([1.0]))]
        return self._stages(logits)

    def _stages(self, logits: np.ndarray) -> list[SamplingStage]:
        """The chain after penalties, step by step: top-k, top-p, min-p, temperature."""
        params = self.params
        stages = []
        candidates = np.arange(logits.size)
        if 0 < params.top_k < logits.size:
            keep = np.argpartition(-logits, params.top_k - 1)[: params.top_k]
            candidates, logits = candidates[keep], logits[keep]
        order = np.argsort(-logits, kind="stable")
        candidates, logits = candidates[order], logits[order]
        probabilities = _softmax(logits)
        if params.top_k > 0:
            stages.append(SamplingStage("top_k", candidates, probabilities))
        if params.top_p < 1.0:
            # Keep the smallest prefix whose mass reaches top_p (always at least one token).
            cut = int(np.searchsorted(np.cumsum(probabilities), params.top_p)) + 1
            candidates, logits = candidates[:cut], logits[:cut]
            probabilities = _softmax(logits)
        stages.append(SamplingStage("top_p", candidates, probabilities))
        if params.min_p > 0.0:
            keep = probabilities >= params.min_p * probabilities[0]
            candidates, logits = candidates[keep], logits[keep]
            probabilities = _softmax(logits)
        stages.append(SamplingStage("min_p", candidates, probabilities))
        probabilities = _softmax(logits / params.temperature)
        stages.append(SamplingStage("temperature", candidates, probabilities))
        return stages


def _mask_disallowed(logits: np.ndarray, allowed: np.ndarray) -> None:
    """Set every token the constraint forbids to -inf (ids past the mask's end are forbidden)."""
    allowed = np.asarray(allowed, dtype=bool)[: logits.size]
    if not allowed.any():
        raise LlmkitError("The output constraint allows no next token.")
    logits[allowed.size :] = -np.inf
    logits[: allowed.size][~allowed] = -np.inf


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max())
    return shifted / shifted.sum()
