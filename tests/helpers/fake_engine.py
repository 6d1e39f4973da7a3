"""A scripted engine implementing the engine protocol, for tests that need no weights.

Each sampler "generates" a fixed script of token ids, so the loop, the batch scheduler and the
server can be tested exactly:

    engine = FakeEngine({1: b"Hello", 2: b" world", 3: b"<|end|>"}, script=[1, 2, 3],
                        end_of_generation=[3])
    model = Model(manifest, engine)           # or drive GenerationStream / BatchScheduler directly

- `script` is a list of ids, or a function from a request's prompt ids to its list of ids (so
  concurrent requests in a batch can answer differently). Past its end a script repeats its last id.
  `seeded_script`, when given, is a function from a sampler's seed (None without one) to its ids
  instead, so n choices of one prompt (seeds seed, seed+1, ...) can answer differently.
- Text: `tokenize` turns each character into its code point; `token_bytes` gives `pieces[id]`, or
  the character with that code point, so prompts round-trip.
- With a TokenConstraint, a sampler emits its scripted id when the constraint allows it, otherwise
  the lowest allowed id, and then advances the constraint.
- Every context records its decode calls (`context.calls`), cached tokens (`context.cached`) and
  sequence copies (`context.copies`, (source, target) pairs); the engine records every sampler's
  parameters (`engine.sampler_params`).
  Set `engine.fail_decodes = n` to make the next n decode calls raise ContextOverflowError, and
  `engine.decode_delay` (seconds) to slow each decode down (for cancellation and queueing tests).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Sequence

import numpy as np

from llmkit.engines.base import BatchItem, TokenConstraint, TokenizerFacts
from llmkit.errors import ContextOverflowError
from llmkit.params import SamplingParams

Script = Sequence[int] | Callable[[Sequence[int]], Sequence[int]]


class ScriptedSampler:
    def __init__(
        self, context: FakeContext, script: Sequence[int], constraint: TokenConstraint | None
    ) -> None:
        self.context, self.script, self.constraint = context, list(script), constraint
        self.sampled: list[int] = []

    def sample(self, output: int = -1) -> int:
        self.context.logits(output)  # fails like a real context when there is no such row
        step = len(self.sampled)
        token = self.script[min(step, len(self.script) - 1)]
        if self.constraint is not None:
            allowed = self.constraint.allowed()
            if not allowed[token]:
                token = int(np.flatnonzero(allowed)[0])
            self.constraint.accept(token)
        self.sampled.append(token)
        return token


class FakeContext:
    """`sequences` independent token lists; decode() appends to them and counts output rows."""

    def __init__(self, engine: FakeEngine, sequences: int, sequence_length: int) -> None:
        self.engine, self.sequences, self.sequence_length = engine, sequences, sequence_length
        self._cached: list[list[int]] = [[] for _ in range(sequences)]
        self.calls: list[list[BatchItem]] = []  # every decode call's items, in order
        self.copies: list[tuple[int, int]] = []  # every copy_sequence call, in order
        self.outputs = 0  # output rows of the latest decode
        self.closed = False

    def decode(self, items: Sequence[BatchItem]) -> None:
        engine = self.engine
        if engine.decode_delay:
            time.sleep(engine.decode_delay)
        lengths: dict[int, int] = {}
        for item in items:
            if not 0 <= item.sequence < self.sequences:
                raise ValueError(f"There is no sequence {item.sequence}.")
            lengths[item.sequence] = lengths.get(item.sequence, 0) + len(item.tokens)
        overflow = any(
            len(self._cached[seq]) + count > self.sequence_length for seq, count in lengths.items()
        )
        if engine.fail_decodes > 0 or overflow:
            engine.fail_decodes = max(0, engine.fail_decodes - 1)
            for seq in lengths:
                self._cached[seq] = []
            raise ContextOverflowError("The fake engine could not evaluate the tokens.")
        self.calls.append(list(items))
        for item in items:
            self._cached[item.sequence].extend(item.tokens)
        self.outputs = sum(
            (len(item.tokens) if item.all_logits else 1) for item in items if item.want_logits
        )

    def cached(self, sequence: int) -> Sequence[int]:
        return list(self._cached[sequence])

    def keep_prefix(self, sequence: int, length: int) -> None:
        del self._cached[sequence][length:]

    def copy_sequence(self, source: int, target: int) -> None:
        for sequence in (source, target):
            if not 0 <= sequence < self.sequences:
                raise ValueError(f"There is no sequence {sequence}.")
        self.copies.append((source, target))
        self._cached[target] = list(self._cached[source])

    def logits(self, output: int = -1) -> np.ndarray:
        if not -self.outputs <= output < self.outputs:
            raise IndexError(f"There is no output row {output} in the latest decode.")
        return np.zeros(self.engine.tokenizer_facts.vocab_size, dtype=np.float32)

    def new_sampler(
        self,
        params: SamplingParams,
        history: Sequence[int],
        constraint: TokenConstraint | None = None,
    ) -> ScriptedSampler:
        engine = self.engine
        engine.sampler_params.append(params)
        script = engine.script
        if engine.seeded_script is not None:
            ids = engine.seeded_script(params.seed)
        else:
            ids = script(list(history)) if callable(script) else script
        return ScriptedSampler(self, ids, constraint)

    def close(self) -> None:
        self.closed = True


class FakeEngine:
    """Vocabulary: id -> bytes given by `pieces`; `script` is what every sampler emits."""

    name = "fake"

    def __init__(
        self,
        pieces: dict[int, bytes],
        script: Script,
        context_length: int = 64,
        *,
        end_of_generation: Collection[int] = (),
        vocab_size: int = 256,
        embedding_size: int = 8,
        seeded_script: Callable[[int | None], Sequence[int]] | None = None,
    ) -> None:
        self.pieces = pieces
        self.script = script
        self.seeded_script = seeded_script
        self.sampler_params: list[SamplingParams] = []
        self.context_length = context_length
        self.embedding_size = embedding_size
        self.fail_decodes = 0
        self.decode_delay = 0.0
        size = max(vocab_size, max(pieces, default=0) + 1)
        ends = frozenset(end_of_generation)
        self._facts = TokenizerFacts(size, None, min(ends, default=None), ends, add_bos=False)
        self._context = FakeContext(self, 1, context_length)
        self.contexts: list[FakeContext] = []  # the ones new_context() made
        self.embedded: list[list[int]] = []  # every embed() call's tokens

    @property
    def tokenizer_facts(self) -> TokenizerFacts:
        return self._facts

    @property
    def context(self) -> FakeContext:
        return self._context

    def new_context(self, sequences: int, sequence_length: int) -> FakeContext:
        context = FakeContext(self, sequences, sequence_length)
        self.contexts.append(context)
        return context

    def tokenize(self, text: str, *, add_bos: bool = False) -> list[int]:
        return [ord(c) for c in text]

    def token_bytes(self, token_id: int) -> bytes:
        return self.pieces.get(token_id) or chr(token_id).encode()

    def token_id(self, text: str) -> int | None:
        matches = [i for i, piece in self.pieces.items() if piece == text.encode()]
        return matches[0] if matches else None

    def embed(self, token_ids: Sequence[int]) -> list[float]:
        """A unit vector that depends only on the tokens (the same input, the same vector)."""
        self.embedded.append(list(token_ids))
        vector = np.zeros(self.embedding_size)
        for position, token in enumerate(token_ids):
            vector[(token + position) % self.embedding_size] += 1.0
        norm = float(np.linalg.norm(vector)) or 1.0
        return [float(value) / norm for value in vector]

    def close(self) -> None:
        pass
