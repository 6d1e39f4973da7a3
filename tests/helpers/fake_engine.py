"""A scripted engine: it 'generates' a fixed token sequence, so loop behaviour can be tested exactly."""

from __future__ import annotations

from collections.abc import Sequence


class ScriptedSampler:
    def __init__(self, engine: FakeEngine) -> None:
        self.engine = engine

    def sample(self) -> int:
        return self.engine.script[self.engine.position]


class FakeEngine:
    """Vocabulary: id -> bytes given by `pieces`; `script` is the sequence of sampled ids."""

    name = "fake"

    def __init__(
        self, pieces: dict[int, bytes], script: Sequence[int], context_length: int = 64
    ) -> None:
        self.pieces = pieces
        self.script = list(script)
        self.context_length = context_length
        self.position = 0
        self.decoded: list[int] = []
        self.last_reused_tokens = 0

    def tokenize(self, text: str, *, add_bos: bool = False) -> list[int]:
        return [ord(c) for c in text]

    def token_bytes(self, token_id: int) -> bytes:
        return self.pieces[token_id]

    def token_id(self, text: str) -> int | None:
        matches = [i for i, piece in self.pieces.items() if piece == text.encode()]
        return matches[0] if matches else None

    def prefill(self, token_ids: Sequence[int]) -> int:
        self.position = 0
        return 0

    def decode(self, token_id: int) -> None:
        self.decoded.append(token_id)
        self.position += 1

    def new_sampler(self, params, history) -> ScriptedSampler:
        return ScriptedSampler(self)

    def close(self) -> None:
        pass
