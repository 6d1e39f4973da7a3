"""What the model predicts: the next-token distribution, and the log-probability of a text.

Both read the engine's own logits (any engine, through the Context protocol), so what is shown is
exactly what the sampler starts from.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from llmkit.engines.base import BatchItem, Engine
from llmkit.errors import ContextOverflowError, InvalidParameterError
from llmkit.generation.logprobs import log_softmax
from llmkit.generation.loop import prefill
from llmkit.params import SamplingParams

MAX_TOP = 100  # rows a distribution may list
SCORE_CHUNK = 256  # tokens per decode call when scoring (below every engine's batch limit)


@dataclass(frozen=True)
class TokenChance:
    """One candidate next token."""

    id: int
    text: str  # the token's text as it would print ("<|im_end|>" for a special token)
    probability: float
    logprob: float
    rank: int  # 1 = the most likely
    special: bool = False


@dataclass(frozen=True)
class Score:
    """How likely the model finds a text, token by token."""

    token_ids: list[int]
    tokens: list[str]
    logprobs: list[float]  # of each token after the first, given the ones before it

    @property
    def total_logprob(self) -> float:
        return float(sum(self.logprobs))

    @property
    def perplexity(self) -> float:
        return math.exp(-self.total_logprob / len(self.logprobs)) if self.logprobs else math.nan


def token_text(engine: Engine, token_id: int) -> str:
    return engine.token_bytes(token_id).decode("utf-8", "replace")


def top_tokens(engine: Engine, logits: np.ndarray, top: int) -> list[TokenChance]:
    """The `top` most likely tokens of one logits row, most likely first."""
    if not 1 <= top <= MAX_TOP:
        raise InvalidParameterError(f"top must be between 1 and {MAX_TOP} (got {top}).")
    size = engine.tokenizer_facts.vocab_size
    logprobs = log_softmax(np.asarray(logits[:size]))
    count = min(top, logprobs.size)
    best = np.argpartition(-logprobs, count - 1)[:count]
    best = best[np.argsort(-logprobs[best], kind="stable")]
    special = engine.tokenizer_facts.special_ids | engine.tokenizer_facts.end_of_generation_ids
    return [
        TokenChance(
            int(token),
            token_text(engine, int(token)),
            float(math.exp(logprobs[token])),
            float(logprobs[token]),
            rank + 1,
            int(token) in special,
        )
        for rank, token in enumerate(best)
    ]


def rank_of(logits: np.ndarray, token_id: int) -> int:
    """1 + how many tokens the model found more likely than this one."""
    return int((np.asarray(logits) > logits[token_id]).sum()) + 1


def next_tokens(engine: Engine, prompt_ids: Sequence[int], top: int = 10) -> list[TokenChance]:
    """The distribution over the token after `prompt_ids`, on the engine's own context."""
    _check_length(engine, len(prompt_ids))
    context = engine.context
    prefill(context, prompt_ids)
    return top_tokens(engine, context.logits(), top)


def score(engine: Engine, token_ids: Sequence[int]) -> Score:
    """Each token's log-probability given the ones before it (the first has none)."""
    ids = list(token_ids)
    if len(ids) < 2:
        raise InvalidParameterError("Scoring needs a text of at least two tokens.")
    _check_length(engine, len(ids))
    context = engine.context
    context.keep_prefix(0, 0)
    logprobs: list[float] = []
    size = engine.tokenizer_facts.vocab_size
    for start in range(0, len(ids) - 1, SCORE_CHUNK):
        chunk = ids[start : min(start + SCORE_CHUNK, len(ids) - 1)]
        context.decode([BatchItem(0, chunk, want_logits=True, all_logits=True)])
        for row, position in enumerate(range(start, start + len(chunk))):
            following = ids[position + 1]
            logprobs.append(float(log_softmax(np.asarray(context.logits(row)[:size]))[following]))
    return Score(ids, [token_text(engine, t) for t in ids], logprobs)


def _check_length(engine: Engine, count: int) -> None:
    if count == 0:
        raise InvalidParameterError("The text is empty; there is nothing to predict from.")
    if count > engine.context_length:
        raise ContextOverflowError(
            f"The text is {count:,} tokens but the context window holds "
            f"{engine.context_length:,}; shorten it or load the model with a larger context."
        )


@dataclass(frozen=True)
class WalkStep:
    """One step of a walk: the distribution, and the token the sampler chose from it."""

    distribution: list[TokenChance]
    chosen: TokenChance


def walk(
    engine: Engine, prompt_ids: Sequence[int], params: SamplingParams, steps: int, top: int = 10
) -> Iterator[WalkStep]:
    """Generate `steps` tokens with the engine's own sampler, showing each step's distribution."""
    if not 1 <= steps <= 1000:
        raise InvalidParameterError(f"steps must be between 1 and 1000 (got {steps}).")
    _check_length(engine, len(prompt_ids) + steps)
    context = engine.context
    prefill(context, prompt_ids)
    sampler = context.new_sampler(params, prompt_ids)
    size = engine.tokenizer_facts.vocab_size
    for _ in range(steps):
        logits = np.array(context.logits()[:size])  # a copy: sampling may change the row
        distribution = top_tokens(engine, logits, top)
        token = sampler.sample()
        logprob = float(log_softmax(logits)[token])
        special = engine.tokenizer_facts.special_ids | engine.tokenizer_facts.end_of_generation_ids
        chosen = TokenChance(
            token,
            token_text(engine, token),
            math.exp(logprob),
            logprob,
            rank_of(logits, token),
            token in special,
        )
        yield WalkStep(distribution, chosen)
        if token in engine.tokenizer_facts.end_of_generation_ids:
            return
        context.decode([BatchItem(0, (token,))])


@dataclass(frozen=True)
class StageView:
    """What one step of the sampler chain leaves: how many tokens, the most likely of them."""

    name: str
    remaining: int
    top: list[TokenChance]


def explain_sampling(
    engine: Engine, prompt_ids: Sequence[int], params: SamplingParams, top: int = 10
) -> list[StageView]:
    """How the sampling settings reshape the next-token distribution, step by step, computed by
    the engine's own sampler chain. The first view is the model's plain distribution."""
    _check_length(engine, len(prompt_ids))
    context = engine.context
    prefill(context, prompt_ids)
    logits = np.array(context.logits()[: engine.tokenizer_facts.vocab_size])
    views = [StageView("model", int(logits.size), top_tokens(engine, logits, top))]
    special = engine.tokenizer_facts.special_ids | engine.tokenizer_facts.end_of_generation_ids
    sampler = context.new_sampler(params, prompt_ids)
    for stage in sampler.explain():
        shown = [
            TokenChance(
                int(token),
                token_text(engine, int(token)),
                float(probability),
                float(math.log(probability)) if probability > 0 else -math.inf,
                rank + 1,
                int(token) in special,
            )
            for rank, (token, probability) in enumerate(
                zip(stage.ids[:top], stage.probabilities[:top])
            )
        ]
        views.append(StageView(stage.name, int(stage.ids.size), shown))
    return views
