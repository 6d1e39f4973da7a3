"""A multi-turn conversation that always fits the model's context window.

When the history outgrows the window, the oldest turns are dropped (the system prompt is kept), and
the caller is told how many, so the user can be told too.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from llmkit.chat.inspect import InspectableModel
from llmkit.chat.template import Message
from llmkit.engines.base import reusable_prefix
from llmkit.errors import ContextOverflowError, InvalidParameterError, LlmkitError
from llmkit.generation.loop import PREFILL_CHUNK, prefill

if TYPE_CHECKING:
    import threading

    from llmkit.generation.loop import GenerationResult, GenerationStream
    from llmkit.params import SamplingParams


class ChatModel(InspectableModel, Protocol):
    """What a session needs of `llmkit.model.Model` (the Python API sits above chat, so chat
    names the shape it uses instead of importing it)."""

    @property
    def system_prompt(self) -> str | None: ...

    @property
    def default_params(self) -> SamplingParams: ...

    def prompt_ids(self, messages: Sequence[Message]) -> list[int]: ...

    def with_system(
        self, messages: Sequence[Message], system: str | None = None
    ) -> list[Message]: ...

    def stream_ids(
        self,
        prompt_ids: Sequence[int],
        params: SamplingParams | None = None,
        cancel: threading.Event | None = None,
    ) -> GenerationStream: ...


# What `/set NAME VALUE` changes: the sampling parameter each name stands for, and its type.
SETTINGS: dict[str, tuple[str, type]] = {
    "temperature": ("temperature", float),
    "top_p": ("top_p", float),
    "top_k": ("top_k", int),
    "min_p": ("min_p", float),
    "repeat_penalty": ("repeat_penalty", float),
    "max_tokens": ("max_tokens", int),
    "seed": ("seed", int),
}
_CLEARED = ("off", "none", "default")  # for seed and max_tokens: back to unset

# Prompt tokens a message must add before reading it is shown step by step.
PROGRESS_THRESHOLD = PREFILL_CHUNK


class ChatSession:
    def __init__(
        self, model: ChatModel, system: str | None = None, params: SamplingParams | None = None
    ) -> None:
        self.model = model
        self.system = system if system is not None else model.system_prompt
        self.params = params or model.default_params
        self.messages: list[Message] = []

    def reset(self) -> None:
        self.messages = []

    def conversation(self, pending: str | None = None) -> list[Message]:
        """The messages the model is given: system prompt, history, and an optional new user turn."""
        messages = list(self.messages)
        if pending is not None:
            messages.append({"role": "user", "content": pending})
        # The model adds the system prompt and a recipe's opening messages ("" means none).
        return self.model.with_system(messages, self.system or "")

    def next_prompt(self, pending: str | None = None) -> str:
        return self.model.render_prompt(self.conversation(pending))

    def reserved_tokens(self) -> int:
        """Room kept free for the answer."""
        window = self.model.context_length
        return min(self.params.max_tokens or 512, window // 4)

    def fit(self, pending: str) -> int:
        """Drop the oldest turns until the prompt plus room for an answer fits; return how many."""
        limit = self.model.context_length - self.reserved_tokens()
        dropped = 0
        while len(self.model.prompt_ids(self.conversation(pending))) > limit:
            if not self.messages:
                raise ContextOverflowError(
                    f"This message is too long for the {self.model.context_length:,}-token context "
                    "window (with room for an answer); shorten it or start with a larger --context."
                )
            # Drop a whole exchange (the oldest message and any replies up to the next user turn).
            self.messages.pop(0)
            dropped += 1
            while self.messages and self.messages[0]["role"] != "user":
                self.messages.pop(0)
                dropped += 1
        return dropped

    def ask(
        self,
        text: str,
        cancel: threading.Event | None = None,
        progress: Callable[[int, int], None] | None = None,
    ) -> GenerationStream:
        """Start answering a user message. Iterate the stream, then call `record` with its result.

        With `progress`, a long prompt is read (evaluated into the cache) first, in steps, calling
        progress(tokens_read, prompt_tokens) after each; the answer then starts at once.
        """
        prompt_ids = self.model.prompt_ids(self.conversation(text))
        if progress is not None:
            self._read_prompt(prompt_ids, progress)
        stream = self.model.stream_ids(prompt_ids, self.params, cancel)
        self.messages.append({"role": "user", "content": text})
        return stream

    def record(self, result: GenerationResult | None) -> None:
        """Add the assistant's answer (even a stopped, partial one) to the history."""
        self.messages.append({"role": "assistant", "content": result.text if result else ""})

    def _read_prompt(self, prompt_ids: list[int], progress: Callable[[int, int], None]) -> None:
        # Growing prefixes of the prompt, each evaluated after the cached one: the generation
        # loop's own prefill then finds all but the last token cached.
        context = self.model.engine.context
        start = reusable_prefix(context.cached(0), prompt_ids)
        total = len(prompt_ids)
        if total - start <= PROGRESS_THRESHOLD:
            return
        progress(start, total)
        for end in range(start + PREFILL_CHUNK, total, PREFILL_CHUNK):
            prefill(context, prompt_ids[:end])
            progress(end, total)

    # ---- settings ------------------------------------------------------------------------
    def set(self, name: str, value: str) -> str:
        """Change a sampling parameter or the system prompt from text (`/set top_p 0.9`);
        returns the setting as it now reads. Out-of-range values are refused as on the CLI."""
        key = name.strip().lower().replace("-", "_")
        if key == "system":
            self.system = value or None
            return f"system prompt {'set' if value else 'cleared'}"
        if key not in SETTINGS:
            raise InvalidParameterError(
                f"/set knows {', '.join([*SETTINGS, 'system'])}; got {name!r}."
            )
        field, kind = SETTINGS[key]
        if not value:
            raise InvalidParameterError(f"Give a value: /set {key} VALUE.")
        if value.lower() in _CLEARED and field in ("seed", "max_tokens"):
            cleared: dict[str, Any] = {field: None}
            self.params = replace(self.params, **cleared)
            return f"{key} off"
        try:
            parsed = kind(value)
        except ValueError:
            noun = "an integer" if kind is int else "a number"
            raise InvalidParameterError(f"{key} must be {noun}; got {value!r}.") from None
        self.params = self.params.updated(**{field: parsed})
        return f"{key} = {getattr(self.params, field)}"

    def settings(self) -> dict[str, object]:
        """What /set changes, as it is now."""
        values: dict[str, object] = {
            key: getattr(self.params, f) for key, (f, _) in SETTINGS.items()
        }
        values["system"] = self.system
        return values

    # ---- files -------------------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        path = Path(path).expanduser()
        data: dict[str, Any] = {
            "model": self.model.name,
            "system": self.system,
            "messages": self.messages,
        }
        path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
        return path

    def load(self, path: str | Path) -> int:
        path = Path(path).expanduser()
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError as error:
            raise LlmkitError(f"{path} does not exist.") from error
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise LlmkitError(f"{path} is not valid JSON ({error}).") from error
        messages = data.get("messages") if isinstance(data, dict) else data
        if not isinstance(messages, list) or not all(
            isinstance(m, dict)
            and m.get("role") in {"system", "user", "assistant", "tool"}
            and isinstance(m.get("content"), str)
            for m in messages
        ):
            raise LlmkitError(
                f"{path} does not hold a conversation (a list of role/content messages)."
            )
        system = data.get("system") if isinstance(data, dict) else None
        if messages and messages[0]["role"] == "system":
            system = messages.pop(0)["content"]
        self.system = system
        self.messages = messages
        return len(messages)
