"""The one generation loop, in three layers (token steps -> a stream of chunks -> a blocking call).

Stop tokens, stop strings across token boundaries, streaming, usage counts, timing and cancellation
are handled here once, for every engine.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Collection, Generator, Iterator, Sequence
from dataclasses import dataclass, field

from llmkit.engines.base import BatchItem, Context, Engine, TokenConstraint, reusable_prefix
from llmkit.errors import ContextOverflowError
from llmkit.generation.logprobs import TokenLogprob
from llmkit.generation.stopping import IncrementalDecoder, StopMatcher
from llmkit.params import SamplingParams

PREFILL_CHUNK = 512  # prompt tokens per decode call: later chunks reuse the same compute buffers


@dataclass
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_prompt_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass
class Timing:
    prompt_seconds: float = 0.0  # prefill, up to the first token's logits
    first_token_seconds: float = 0.0  # from the call to the first sampled token
    generation_seconds: float = 0.0  # from the first token to the last

    def prompt_tokens_per_second(self, usage: Usage) -> float:
        evaluated = usage.prompt_tokens - usage.cached_prompt_tokens
        return evaluated / self.prompt_seconds if self.prompt_seconds > 0 else 0.0

    def generation_tokens_per_second(self, usage: Usage) -> float:
        # The first token's time belongs to prefill; the rate is over the tokens after it.
        steps = usage.completion_tokens - 1
        return steps / self.generation_seconds if steps > 0 and self.generation_seconds > 0 else 0.0


@dataclass
class GenerationChunk:
    """One piece of a streamed answer. The last chunk has finish_reason set."""

    text: str
    token_id: int | None = None
    finish_reason: str | None = None  # "stop", "length", "cancelled"
    # With ignore_eos: the stop token the model produced here, where it would have stopped.
    would_stop_at: str | None = None
    # When asked for: the log-probabilities of the tokens since the previous chunk.
    logprobs: list[TokenLogprob] | None = None


@dataclass
class GenerationResult:
    text: str
    finish_reason: str
    usage: Usage
    timing: Timing
    token_ids: list[int] = field(default_factory=list)
    stopped_by: str | None = None  # the stop token or stop string that ended the answer
    logprobs: list[TokenLogprob] | None = None  # per generated token, when asked for
    # Per prompt token (given the tokens before it; the first has NaN), when asked for.
    prompt_logprobs: list[TokenLogprob] | None = None


class AnswerBuilder:
    """Turns sampled tokens into the text a user sees; shared by the loop and the batch scheduler.

    It ends the answer at a stop token (never shown) or a stop string (held back while it may be
    forming), joins UTF-8 characters split across tokens, marks would-be stops under ignore_eos,
    and counts toward max_new_tokens. `finish_reason` is set once the answer is complete.
    """

    def __init__(
        self,
        token_bytes: Callable[[int], bytes],
        params: SamplingParams,
        stop_token_ids: Collection[int],
        max_new_tokens: int,
    ) -> None:
        self.token_bytes = token_bytes
        self.params = params
        self.stop_token_ids = frozenset(stop_token_ids)
        self.max_new_tokens = max_new_tokens
        self.decoder, self.matcher = IncrementalDecoder(), StopMatcher(params.stop)
        self.pieces: list[str] = []
        self.tokens: list[int] = []
        self.finish_reason: str | None = None
        self.stopped_by: str | None = None

    @property
    def text(self) -> str:
        return "".join(self.pieces)

    def add(self, token: int, *, is_stop: bool = False) -> GenerationChunk | None:
        """Take one sampled token; return the chunk to show now, if any."""
        self.tokens.append(token)
        chunk = None
        if is_stop or token in self.stop_token_ids:
            marker = self.token_bytes(token).decode("utf-8", "replace")
            if not self.params.ignore_eos:
                self.finish_reason, self.stopped_by = "stop", marker
                return None
            # Text held back as the start of a stop string is part of the answer after all.
            released = self.matcher.flush()
            if released:
                self.pieces.append(released)
            chunk = GenerationChunk(released, token, would_stop_at=marker)
            self.matcher = StopMatcher(self.params.stop)
        else:
            shown = self.matcher.feed(self.decoder.feed(self.token_bytes(token)))
            if shown:
                self.pieces.append(shown)
                chunk = GenerationChunk(shown, token)
            if self.matcher.stopped:
                self.finish_reason, self.stopped_by = "stop", self.matcher.matched
                return chunk
        if len(self.tokens) >= self.max_new_tokens:
            self.finish_reason = "length"
        return chunk

    def finish(self, reason: str | None = None) -> GenerationChunk:
        """The last chunk: releases held-back text unless a stop string ended the answer.

        Text held back because it might begin a stop string belongs to the answer whenever no
        stop string completed: at a stop token, at the length limit, or on cancellation.
        """
        self.finish_reason = reason or self.finish_reason or "length"
        tail = ""
        if not self.matcher.stopped:
            tail = self.matcher.feed(self.decoder.flush()) + self.matcher.flush()
        if tail:
            self.pieces.append(tail)
        return GenerationChunk(tail, None, self.finish_reason)


def prefill(context: Context, prompt_ids: Sequence[int], sequence: int = 0) -> int:
    """Bring a sequence's cache to the prompt: keep the shared beginning, evaluate the rest.

    Returns how many prompt tokens were already cached; the last row's logits are the prompt's.
    """
    prompt = list(prompt_ids)
    reused = reusable_prefix(context.cached(sequence), prompt)
    context.keep_prefix(sequence, reused)
    for start in range(reused, len(prompt), PREFILL_CHUNK):
        chunk = prompt[start : start + PREFILL_CHUNK]
        last = start + len(chunk) >= len(prompt)
        context.decode([BatchItem(sequence, chunk, want_logits=last)])
    return reused


def sample_steps(
    context: Context,
    history: Sequence[int],
    params: SamplingParams,
    constraint: TokenConstraint | None = None,
    sequence: int = 0,
) -> Generator[int, None, None]:
    """After prefill: sample, yield, feed the token back; forever (the caller closes it)."""
    sampler = context.new_sampler(params, history, constraint)
    while True:
        token = sampler.sample()
        yield token
        context.decode([BatchItem(sequence, (token,))])


def generate_step(
    engine: Engine,
    prompt_ids: Sequence[int],
    params: SamplingParams,
    constraint: TokenConstraint | None = None,
) -> Iterator[int]:
    """Token ids, one per step, forever, on the engine's own context (sequence 0)."""
    context = engine.context
    prefill(context, prompt_ids)
    return sample_steps(context, prompt_ids, params, constraint)


class GenerationStream:
    """Iterate for GenerationChunks; afterwards `.result` holds the text, usage and timing."""

    def __init__(
        self,
        engine: Engine,
        prompt_ids: Sequence[int],
        params: SamplingParams,
        stop_token_ids: Collection[int] = (),
        cancel: threading.Event | None = None,
        constraint: TokenConstraint | None = None,
    ) -> None:
        if not prompt_ids:
            raise ContextOverflowError("The prompt is empty; there is nothing to continue.")
        room = engine.context_length - len(prompt_ids)
        if room <= 0:
            raise ContextOverflowError(
                f"The prompt is {len(prompt_ids)} tokens but the context window holds "
                f"{engine.context_length}; shorten it or load the model with a larger context."
            )
        self.engine = engine
        self.prompt_ids = list(prompt_ids)
        self.params = params
        self.stop_token_ids = frozenset(stop_token_ids)
        facts = engine.tokenizer_facts
        self.end_ids = facts.end_of_generation_ids | (
            {facts.eos_id} if facts.eos_id is not None else set()
        )
        self.cancel = cancel or threading.Event()
        self.max_new_tokens = min(params.max_tokens or room, room)
        # A grammar the reply must follow (structured output, tool calls); the sampler applies it.
        self.constraint = constraint
        self.result: GenerationResult | None = None

    def __iter__(self) -> Iterator[GenerationChunk]:
        engine = self.engine
        usage = Usage(prompt_tokens=len(self.prompt_ids))
        timing = Timing()
        answer = AnswerBuilder(
            engine.token_bytes, self.params, self.stop_token_ids, self.max_new_tokens
        )
        started = time.perf_counter()
        context = engine.context
        constraint = self.constraint
        # Starts at the first next(), after the prefill below.
        steps = sample_steps(context, self.prompt_ids, self.params, constraint)
        try:
            usage.cached_prompt_tokens = prefill(context, self.prompt_ids)
            for token in steps:
                if not answer.tokens:
                    timing.first_token_seconds = timing.prompt_seconds = (
                        time.perf_counter() - started
                    )
                # A complete grammar text admits only an end token: that is a stop, even where
                # the model's stop tokens do not include the one the grammar allowed.
                ended = constraint is not None and constraint.finished
                chunk = answer.add(token, is_stop=ended and token in self.end_ids)
                usage.completion_tokens = len(answer.tokens)
                if chunk is not None:
                    yield chunk
                if answer.finish_reason is None and self.cancel.is_set():
                    answer.finish_reason = "cancelled"
                if answer.finish_reason is not None:
                    break
        except BaseException:
            # Ctrl-C or a closed stream: record what was produced before passing it on.
            answer.finish_reason = "cancelled"
            raise
        finally:
            steps.close()
            if answer.tokens:
                timing.generation_seconds = (
                    time.perf_counter() - started - timing.first_token_seconds
                )
            self.result = GenerationResult(
                answer.text,
                answer.finish_reason or "cancelled",
                usage,
                timing,
                answer.tokens,
                answer.stopped_by,
            )
        last = answer.finish()
        self.result.text = answer.text
        yield last


def generate(
    engine: Engine,
    prompt_ids: Sequence[int],
    params: SamplingParams,
    stop_token_ids: Collection[int] = (),
    cancel: threading.Event | None = None,
) -> GenerationResult:
    """Run the loop to the end and return the whole answer."""
    stream = GenerationStream(engine, prompt_ids, params, stop_token_ids, cancel)
    for _ in stream:
        pass
    assert stream.result is not None
    return stream.result
