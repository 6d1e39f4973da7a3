"""Sampling parameters, validated once so every engine and interface gets the same rules."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

from llmkit.errors import InvalidParameterError


@dataclass(frozen=True)
class SamplingParams:
    """How the next token is chosen. temperature=0 means greedy (always the most likely token)."""

    temperature: float = 0.7
    top_k: int = 40
    top_p: float = 0.95
    min_p: float = 0.05
    repeat_penalty: float = 1.1
    repeat_last_n: int = 64
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    seed: int | None = None
    max_tokens: int | None = None  # None: until a stop, or the context is full
    stop: tuple[str, ...] = field(default_factory=tuple)
    ignore_eos: bool = False

    def __post_init__(self) -> None:
        checks = [
            (0.0 <= self.temperature <= 10.0, "temperature must be between 0 and 10"),
            (self.top_k >= 0, "top_k must be 0 (off) or a positive integer"),
            (0.0 < self.top_p <= 1.0, "top_p must be greater than 0 and at most 1"),
            (0.0 <= self.min_p <= 1.0, "min_p must be between 0 and 1"),
            (
                0.0 < self.repeat_penalty <= 10.0,
                "repeat_penalty must be greater than 0 and at most 10",
            ),
            (self.repeat_last_n >= 0, "repeat_last_n must not be negative"),
            (-2.0 <= self.presence_penalty <= 2.0, "presence_penalty must be between -2 and 2"),
            (-2.0 <= self.frequency_penalty <= 2.0, "frequency_penalty must be between -2 and 2"),
            (self.max_tokens is None or self.max_tokens >= 1, "max_tokens must be at least 1"),
            (self.seed is None or 0 <= self.seed < 2**32, "seed must be between 0 and 2^32-1"),
            (
                all(isinstance(s, str) and s for s in self.stop),
                "stop strings must be non-empty text",
            ),
        ]
        for ok, message in checks:
            if not ok:
                raise InvalidParameterError(f"Invalid sampling parameter: {message}.")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0

    def updated(self, **changes: Any) -> SamplingParams:
        """A copy with the given (non-None) values changed; unknown names are an error."""
        known = {f.name for f in fields(self)}
        unknown = set(changes) - known
        if unknown:
            raise InvalidParameterError(
                f"Unknown sampling parameter(s): {', '.join(sorted(unknown))}."
            )
        given = {key: value for key, value in changes.items() if value is not None}
        if "stop" in given:
            given["stop"] = tuple(given["stop"])
        return replace(self, **given)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["stop"] = list(self.stop)
        return data
