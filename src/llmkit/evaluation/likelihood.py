"""The log-probability of a continuation given a context, as evaluation harnesses ask for it.

`llmkit.generation.scoring.score` scores a whole text from its first token. A harness instead
asks, thousands of times, how likely a short continuation is after a long shared context (the
same question with each of its answers, the same few-shot prompt before every question). So this
keeps the context's keys and values in the engine's cache between requests (the generation
loop's `prefill`) and evaluates only the tokens that changed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from llmkit.engines.base import BatchItem, Engine
from llmkit.errors import ContextOverflowError, InvalidParameterError
from llmkit.generation.logprobs import log_softmax
from llmkit.generation.loop import prefill
from llmkit.generation.scoring import SCORE_CHUNK


@dataclass(frozen=True)
class Likelihood:
    """How likely a continuation is after its context."""

    logprob: float  # the sum over the continuation's tokens
    greedy: bool  # whether greedy decoding would have produced exactly these tokens
    cut: int = 0  # context tokens dropped from the front to fit the context window


def continuation_likelihood(
    engine: Engine, context_ids: Sequence[int], continuation_ids: Sequence[int]
) -> Likelihood:
    """log P(continuation | context), token by token, on the engine's own context.

    A context too long for the window loses its oldest tokens (as lm-eval's own models do); a
    continuation that alone does not fit is an error.
    """
    context, continuation = list(context_ids), list(continuation_ids)
    if not context or not continuation:
        raise InvalidParameterError("Scoring a continuation needs a context and a continuation.")
    # The last continuation token is only predicted, never fed, so the window holds one more.
    room = engine.context_length + 1 - len(continuation)
    if room < 1:
        raise ContextOverflowError(
            f"A continuation of {len(continuation):,} tokens does not fit the context window "
            f"of {engine.context_length:,}; load the model with a larger --context."
        )
    cut = max(0, len(context) - room)
    context = context[cut:]
    cache = engine.context
    prefill(cache, context)
    size = engine.tokenizer_facts.vocab_size
    total, greedy = _add(0.0, True, cache.logits()[:size], continuation[0])
    for start in range(0, len(continuation) - 1, SCORE_CHUNK):
        fed = continuation[start : min(start + SCORE_CHUNK, len(continuation) - 1)]
        cache.decode([BatchItem(0, fed, want_logits=True, all_logits=True)])
        for row in range(len(fed)):
            following = continuation[start + row + 1]
            total, greedy = _add(total, greedy, cache.logits(row)[:size], following)
    return Likelihood(total, greedy, cut)


def _add(total: float, greedy: bool, logits: np.ndarray, token: int) -> tuple[float, bool]:
    row = np.asarray(logits)
    return total + float(log_softmax(row)[token]), greedy and int(row.argmax()) == token
