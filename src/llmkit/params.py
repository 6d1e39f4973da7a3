"""Sampling parameters, validated once so every engine and interface gets the same rules."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

from llmkit.errors import InvalidParameterError

# Upper bounds on what a request may ask for. Each one caps memory or time that a caller could
# otherwise make the engine allocate (llama.cpp sizes the repetition window from repeat_last_n).
MAX_TOP_K = 1000
MAX_REPEAT_LAST_N = 4096
MAX_TOKENS_LIMIT = 1 << 20  # the context ends generation sooner; this only refuses absurd values
MAX_SEED = 2**32 - 1
MAX_STOP_STRINGS = 16
MAX_STOP_LENGTH = 1000


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
        floats: tuple[str, ...] = ("temperature", "top_p", "min_p", "repeat_penalty")
        floats += ("presence_penalty", "frequency_penalty")
        for name in floats:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise InvalidParameterError(f"Invalid sampling parameter: {name} must be a number.")
            if not math.isfinite(value):
                raise InvalidParameterError(
                    f"Invalid sampling parameter: {name} must be a finite number."
                )
        for name in ("top_k", "repeat_last_n", "seed", "max_tokens"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
                raise InvalidParameterError(
                    f"Invalid sampling parameter: {name} must be an integer."
                )
        stops_ok = (
            isinstance(self.stop, (tuple, list))
            and len(self.stop) <= MAX_STOP_STRINGS
            and all(isinstance(s, str) and 0 < len(s) <= MAX_STOP_LENGTH for s in self.stop)
        )
        checks = [
            (0.0 <= self.temperature <= 10.0, "temperature must be between 0 and 10"),
            (
                0 <= self.top_k <= MAX_TOP_K,
                f"top_k must be 0 (off) or a positive integer up to {MAX_TOP_K}",
            ),
            (0.0 < self.top_p <= 1.0, "top_p must be greater than 0 and at most 1"),
            (0.0 <= self.min_p <= 1.0, "min_p must be between 0 and 1"),
            (
                0.0 < self.repeat_penalty <= 10.0,
                "repeat_penalty must be greater than 0 and at most 10",
            ),
            (
                0 <= self.repeat_last_n <= MAX_REPEAT_LAST_N,
                f"repeat_last_n must be between 0 and {MAX_REPEAT_LAST_N}",
            ),
            (-2.0 <= self.presence_penalty <= 2.0, "presence_penalty must be between -2 and 2"),
            (-2.0 <= self.frequency_penalty <= 2.0, "frequency_penalty must be between -2 and 2"),
            (
                self.max_tokens is None or 1 <= self.max_tokens <= MAX_TOKENS_LIMIT,
                f"max_tokens must be between 1 and {MAX_TOKENS_LIMIT:,}",
            ),
            (
                self.seed is None or 0 <= self.seed <= MAX_SEED,
                "seed must be between 0 and 2^32-1",
            ),
            (
                stops_ok,
                f"stop takes at most {MAX_STOP_STRINGS} non-empty strings of at most "
                f"{MAX_STOP_LENGTH} characters",
            ),
            (isinstance(self.ignore_eos, bool), "ignore_eos must be true or false"),
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


# Ollama option name -> SamplingParams name. Options with no meaning here (num_ctx, num_thread,
# mirostat, ...) are accepted and ignored, as Ollama itself ignores what a runner does not use.
OLLAMA_OPTIONS = {
    "temperature": "temperature",
    "top_k": "top_k",
    "top_p": "top_p",
    "min_p": "min_p",
    "seed": "seed",
    "stop": "stop",
    "repeat_penalty": "repeat_penalty",
    "repeat_last_n": "repeat_last_n",
    "presence_penalty": "presence_penalty",
    "frequency_penalty": "frequency_penalty",
    "num_predict": "max_tokens",
}


OLLAMA_INTEGER_OPTIONS = {"top_k", "seed", "repeat_last_n", "num_predict"}


def params_from_ollama(options: dict[str, Any] | None) -> dict[str, Any]:
    """Ollama's option names and values (an API request's `options`, a Modelfile's PARAMETER
    lines) as SamplingParams fields."""
    params: dict[str, Any] = {}
    for key, value in (options or {}).items():
        if key not in OLLAMA_OPTIONS or value is None:
            continue
        if key == "stop":
            stops = [value] if isinstance(value, str) else value
            if not isinstance(stops, list) or not all(isinstance(item, str) for item in stops):
                raise InvalidParameterError("options.stop must be a string or a list of strings.")
            value = stops
        else:
            kind = int if key in OLLAMA_INTEGER_OPTIONS else float
            if (
                isinstance(value, bool)
                or not isinstance(value, (int, float))
                or (kind is int and value != int(value))
            ):
                raise InvalidParameterError(
                    f"options.{key} must be {'an integer' if kind is int else 'a number'}."
                )
            value = kind(value)
        params[OLLAMA_OPTIONS[key]] = value
    if params.get("max_tokens") is not None and params["max_tokens"] < 0:
        params["max_tokens"] = None  # -1 (and -2): until a stop or the context is full
    if params.get("seed") == -1:
        params["seed"] = None  # Ollama's "random seed"
    if params.get("repeat_last_n") == -1:
        params["repeat_last_n"] = MAX_REPEAT_LAST_N  # Ollama's "the whole context", bounded
    return params
