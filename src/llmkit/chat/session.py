"""A multi-turn conversation that always fits the model's context window.

When the history outgrows the window, the oldest turns are dropped (the system prompt is kept), and
the caller is told how many, so the user can be told too.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from llmkit.chat.inspect import InspectableModel
from llmkit.chat.template import Message
from llmkit.errors import ContextOverflowError, LlmkitError

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

    def stream_ids(
        self,
        prompt_ids: Sequence[int],
        params: SamplingParams | None = None,
        cancel: threading.Event | None = None,
    ) -> GenerationStream: ...


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
        if self.system:
            messages.insert(0, {"role": "system", "content": self.system})
        return messages

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

    def ask(self, text: str, cancel: threading.Event | None = None) -> GenerationStream:
        """Start answering a user message. Iterate the stream, then call `record` with its result."""
        prompt_ids = self.model.prompt_ids(self.conversation(text))
        stream = self.model.stream_ids(prompt_ids, self.params, cancel)
        self.messages.append({"role": "user", "content": text})
        return stream

    def record(self, result: GenerationResult | None) -> None:
        """Add the assistant's answer (even a stopped, partial one) to the history."""
        self.messages.append({"role": "assistant", "content": result.text if result else ""})

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
