"""The one generation loop, in three layers (token steps -> a stream of chunks -> a blocking call).

Stop tokens, stop strings across token boundaries, streaming, usage counts, timing and cancellation
are handled here once, for every engine.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass, field

from llmkit.engines.base import Engine
from llmkit.errors import ContextOverflowError
from llmkit.generation.params import SamplingParams
from llmkit.generation.stopping import IncrementalDecoder, StopMatcher


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


@dataclass
class GenerationResult:
    text: str
    finish_reason: str
    usage: Usage
    timing: Timing
    token_ids: list[int] = field(default_factory=list)
    stopped_by: str | None = None  # the stop token or stop string that ended the answer


def generate_step(
    engine: Engine, prompt_ids: Sequence[int], params: SamplingParams
) -> Iterator[int]:
    """Token ids, one per step, forever; the caller decides when to stop (and closes the iterator)."""
    engine.prefill(prompt_ids)
    sampler = engine.new_sampler(params, prompt_ids)
    while True:
        token = sampler.sample()
        yield token
        engine.decode(token)


class GenerationStream:
    """Iterate for GenerationChunks; afterwards `.result` holds the text, usage and timing."""

    def __init__(
        self,
        engine: Engine,
        prompt_ids: Sequence[int],
        params: SamplingParams,
        stop_token_ids: Collection[int] = (),
        cancel: threading.Event | None = None,
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
        self.cancel = cancel or threading.Event()
        self.max_new_tokens = min(params.max_tokens or room, room)
        self.result: GenerationResult | None = None

    def __iter__(self) -> Iterator[GenerationChunk]:
        engine, params = self.engine, self.params
        usage = Usage(prompt_tokens=len(self.prompt_ids))
        timing = Timing()
        decoder, matcher = IncrementalDecoder(), StopMatcher(params.stop)
        pieces: list[str] = []
        tokens: list[int] = []
        finish_reason, stopped_by = "length", None
        started = time.perf_counter()
        steps = generate_step(engine, self.prompt_ids, params)
        try:
            for token in steps:
                now = time.perf_counter()
                if not tokens:
                    timing.first_token_seconds = timing.prompt_seconds = now - started
                    usage.cached_prompt_tokens = getattr(engine, "last_reused_tokens", 0)
                tokens.append(token)
                usage.completion_tokens = len(tokens)
                if token in self.stop_token_ids:
                    marker = engine.token_bytes(token).decode("utf-8", "replace")
                    if not params.ignore_eos:
                        finish_reason, stopped_by = "stop", marker
                        break
                    yield GenerationChunk(matcher.flush(), token, would_stop_at=marker)
                    matcher = StopMatcher(params.stop)
                else:
                    shown = matcher.feed(decoder.feed(engine.token_bytes(token)))
                    if shown:
                        pieces.append(shown)
                        yield GenerationChunk(shown, token)
                    if matcher.stopped:
                        finish_reason, stopped_by = "stop", matcher.matched
                        break
                if self.cancel.is_set():
                    finish_reason = "cancelled"
                    break
                if len(tokens) >= self.max_new_tokens:
                    break
        except BaseException:
            # Ctrl-C or a closed stream: record what was produced before passing it on.
            finish_reason = "cancelled"
            raise
        finally:
            steps.close()
            if tokens:
                timing.generation_seconds = (
                    time.perf_counter() - started - timing.first_token_seconds
                )
            self.result = GenerationResult(
                "".join(pieces), finish_reason, usage, timing, tokens, stopped_by
            )
        tail = "" if finish_reason == "stop" else matcher.feed(decoder.flush()) + matcher.flush()
        if tail:
            pieces.append(tail)
            self.result.text = "".join(pieces)
        yield GenerationChunk(tail, None, finish_reason)


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
