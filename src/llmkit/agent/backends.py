"""Where an agent's replies come from: a loaded model here, or any OpenAI-compatible server.

Both give one reply to a conversation, as a tool call: `kind` says which calls it may make
("first": one of the user's tools; "any": a tool or final_answer; "answer": final_answer only).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from llmkit.chat.tools import (
    ToolCall,
    model_tool_syntax,
    parse_tool_calls,
    plan_tools,
    template_messages,
)
from llmkit.errors import InvalidParameterError
from llmkit.generation.constraints import constraint_factory

ReplyKind = Literal["first", "any", "answer"]
DROPPED = "[result dropped to fit the context window]"
MAX_REMOTE_SECONDS = 600.0


@dataclass
class Reply:
    text: str
    calls: list[ToolCall]
    tokens: int  # prompt tokens not in the cache, plus the reply's
    cached_tokens: int = 0
    error: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class ContextFull(InvalidParameterError):
    def __init__(self, tokens: int, context: int) -> None:
        super().__init__(
            f"The conversation needs {tokens:,} tokens but the context window holds {context:,}, "
            "even with old tool results dropped; load the model with a larger context."
        )


def _choices(specs: list[dict[str, Any]], final: str, require_tool: bool) -> dict[str, Any]:
    """The tool_choice for each kind of reply (specs end with the final-answer tool)."""
    named = {"type": "function", "function": {"name": final}}
    own = len(specs) > 1 and require_tool
    return {"first": "own" if own else "required", "any": "required", "answer": named}


class LocalBackend:
    """A loaded Model: every reply constrained by a grammar, the prompt cache reused."""

    def __init__(
        self, model: Any, specs: list[dict[str, Any]], final: str, require_tool: bool, params: Any
    ) -> None:
        self.model, self.params = model, params
        syntax = model_tool_syntax(model)
        self._constraints: dict[str, Callable[[], Any]] = {}
        for kind, choice in _choices(specs, final, require_tool).items():
            tools = specs[:-1] if choice == "own" else specs
            plan = plan_tools(tools, "required" if choice == "own" else choice, syntax)
            assert plan is not None and plan.grammar is not None
            self._constraints[kind] = constraint_factory(plan.grammar, model.engine)
        self.native = syntax.native
        self.specs = specs

    def _prompt_ids(self, messages: list[dict[str, Any]]) -> list[int]:
        """The prompt for the conversation; old results are dropped first when it does not fit."""
        model, native = self.model, self.native
        room = model.context_length - (self.params.max_tokens or 512)
        while True:
            prepared = template_messages(messages, native)
            ids = model.prompt_ids(prepared, tools=self.specs if native else None)
            if len(ids) <= room:
                return ids
            oldest = next(
                (m for m in messages if m.get("role") == "tool" and m["content"] != DROPPED), None
            )
            if oldest is None:
                raise ContextFull(len(ids), model.context_length)
            oldest["content"] = DROPPED

    def reply(self, messages: list[dict[str, Any]], kind: ReplyKind) -> Reply:
        ids = self._prompt_ids(messages)
        stream = self.model.stream_ids(ids, self.params, constraint=self._constraints[kind]())
        for _ in stream:
            pass
        result = stream.result
        assert result is not None
        usage = result.usage
        _, calls = parse_tool_calls(result.text)
        return Reply(
            result.text,
            calls,
            usage.prompt_tokens - usage.cached_prompt_tokens + usage.completion_tokens,
            usage.cached_prompt_tokens,
            None if calls else "The reply ended before its call was complete (raise max_tokens).",
        )

    def close(self) -> None:
        self.model.close()


class RemoteBackend:
    """An OpenAI-compatible server (another llmkit, a GPU node): its tool calls, its grammar."""

    native = True  # the server renders the tools for its model

    def __init__(
        self,
        base_url: str,
        model: str,
        specs: list[dict[str, Any]],
        final: str,
        require_tool: bool,
        params: dict[str, Any],
        api_key: str | None = None,
        timeout: float = 120.0,
    ) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise InvalidParameterError(f"base_url must be an http(s) URL, not {base_url!r}.")
        if not 0 < timeout <= MAX_REMOTE_SECONDS:
            raise InvalidParameterError(f"timeout must be between 0 and {MAX_REMOTE_SECONDS:g} s.")
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model_name, self.specs, self.params = model, specs, params
        self.choices = _choices(specs, final, require_tool)
        self.headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.timeout = timeout

    def reply(self, messages: list[dict[str, Any]], kind: ReplyKind) -> Reply:
        import httpx

        choice = self.choices[kind]
        tools = self.specs[:-1] if choice == "own" else self.specs
        body = {
            "model": self.model_name,
            "messages": [_wire_message(m) for m in messages],
            "tools": tools,
            "tool_choice": "required" if choice == "own" else choice,
            **self.params,
        }
        try:
            response = httpx.post(self.url, json=body, headers=self.headers, timeout=self.timeout)
        except httpx.HTTPError as error:
            raise InvalidParameterError(
                f"The server at {self.url} cannot be reached: {error}."
            ) from None
        if response.status_code >= 400:
            raise InvalidParameterError(
                f"The server at {self.url} refused the request ({response.status_code}): "
                f"{_error_text(response)}"
            )
        data = response.json()
        message = (data.get("choices") or [{}])[0].get("message") or {}
        calls = []
        for call in message.get("tool_calls") or []:
            function = call.get("function") or {}
            arguments = function.get("arguments") or "{}"
            try:
                parsed = json.loads(arguments) if isinstance(arguments, str) else arguments
            except ValueError:
                parsed = {}
            named = {"id": call["id"]} if call.get("id") else {}
            calls.append(ToolCall(function.get("name", ""), parsed, **named))
        usage = data.get("usage") or {}
        cached = (usage.get("prompt_tokens_details") or {}).get("cached_tokens") or 0
        text = message.get("content") or json.dumps(
            [{"name": c.name, "arguments": c.arguments} for c in calls]
        )
        return Reply(
            text,
            calls,
            int(usage.get("prompt_tokens", 0))
            - int(cached)
            + int(usage.get("completion_tokens", 0)),
            int(cached),
            None if calls else "The server's reply made no tool call.",
        )

    def close(self) -> None:
        pass


def _wire_message(message: dict[str, Any]) -> dict[str, Any]:
    """A conversation message as the OpenAI wire format has it (arguments as JSON text)."""
    if not message.get("tool_calls"):
        return message
    calls = [
        {
            **call,
            "function": {
                **call["function"],
                "arguments": json.dumps(call["function"]["arguments"]),
            },
        }
        for call in message["tool_calls"]
    ]
    return {**message, "tool_calls": calls}


def _error_text(response: Any) -> str:
    try:
        error = response.json().get("error")
        return str(error.get("message") if isinstance(error, dict) else error)[:300]
    except ValueError:
        return response.text[:300]
