"""The log-probability of each generated token, and its most likely alternatives.

Read from the model's logits before any sampling setting or grammar reshapes them, as OpenAI's
and Ollama's `logprobs` report them.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

MAX_TOP_LOGPROBS = 20  # alternatives per token, as OpenAI allows


@dataclass(frozen=True)
class Alternative:
    token_id: int
    text: str
    bytes: bytes
    logprob: float


@dataclass(frozen=True)
class TokenLogprob:
    """One generated token: its log-probability and the `top` most likely tokens at its place."""

    token_id: int
    text: str
    bytes: bytes
    logprob: float
    top: tuple[Alternative, ...] = ()


def unscored(token: int, token_bytes: Callable[[int], bytes]) -> TokenLogprob:
    """A text's first token: nothing comes before it, so it has no log-probability (NaN; the
    APIs write null, as OpenAI does for echo)."""
    raw = token_bytes(token)
    return TokenLogprob(token, raw.decode("utf-8", "replace"), raw, math.nan)


def log_softmax(logits: np.ndarray) -> np.ndarray:
    row = np.asarray(logits, dtype=np.float64)
    shifted = row - row.max()
    return shifted - math.log(float(np.exp(shifted).sum()))


def token_logprob(
    logits: np.ndarray, token: int, top: int, token_bytes: Callable[[int], bytes]
) -> TokenLogprob:
    """The chosen token's entry from one logits row (already cut to the vocabulary)."""
    logprobs = log_softmax(logits)
    alternatives: tuple[Alternative, ...] = ()
    if top > 0:
        count = min(top, logprobs.size)
        best = np.argpartition(-logprobs, count - 1)[:count]
        best = best[np.argsort(-logprobs[best], kind="stable")]
        alternatives = tuple(_alternative(int(t), float(logprobs[t]), token_bytes) for t in best)
    chosen = _alternative(token, float(logprobs[token]), token_bytes)
    return TokenLogprob(chosen.token_id, chosen.text, chosen.bytes, chosen.logprob, alternatives)


def _alternative(token: int, logprob: float, token_bytes: Callable[[int], bytes]) -> Alternative:
    raw = token_bytes(token)
    return Alternative(token, raw.decode("utf-8", "replace"), raw, logprob)
