"""The agent loop: the model calls your functions until it can answer.

Every reply is a tool call, constrained by a grammar (chat/tools.plan_tools, tool_choice
"required"): well-formed, to one of the tools, with arguments valid against its schema, in the
template's own syntax where it has one. The answer itself is a call too, to a built-in
`final_answer` tool, as in smolagents' ToolCallingAgent: a small model then never has to decide
between the call syntax and free text, which is where it fails most (docs/agents.md). Arguments are validated and coerced again in Python, and every failure
(an unknown tool, bad arguments, an exception, a timeout, a result that is not JSON) goes back to
the model as the call's result. The conversation grows by whole turns, so each step's prompt
begins with the previous one and the engine's prefix cache evaluates only the new tokens.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from llmkit.agent.backends import ContextFull, LocalBackend, RemoteBackend, ReplyKind
from llmkit.agent.functions import Tool, ToolError, as_tool, call_tool, coerce_arguments
from llmkit.chat.tools import ToolCall, parse_tool_calls, tool_system_message
from llmkit.errors import InvalidParameterError

DEFAULT_RESULT_CHARS = 2000  # a tool result longer than this is cut, with a note
MAX_REPEATS = 2  # the same call (name and arguments) this many times more ends the run
FINAL_PROMPT = "Give your final answer now, with what you have found."
FINAL_ANSWER = "final_answer"
FINAL_SPEC = {
    "type": "function",
    "function": {
        "name": FINAL_ANSWER,
        "description": "Give the final answer to the user's question. Call it once you know it.",
        "parameters": {
            "type": "object",
            "properties": {"answer": {"type": "string", "maxLength": 2000}},
            "required": ["answer"],
            "additionalProperties": False,
        },
    },
}


@dataclass
class Step:
    """One reply of the model: a tool call and its result, or (tool None) the final answer."""

    tool: str | None
    arguments: dict[str, Any] = field(default_factory=dict)
    result: str | None = None  # what the tool returned, as the model saw it
    error: str | None = None  # why the call failed, as the model saw it
    text: str = ""  # the model's reply, as generated
    tokens: int = 0  # tokens this step cost: prompt tokens not in the cache, plus the reply
    cached_tokens: int = 0  # prompt tokens the cache already held
    seconds: float = 0.0


@dataclass
class AgentResult:
    answer: str
    steps: list[Step]
    stopped: str  # "answer", "max_steps", "repeated" or "context"
    messages: list[dict[str, Any]]  # the whole conversation, as a training example would hold it
    note: str | None = None  # why a run that did not answer stopped

    @property
    def tokens(self) -> int:
        return sum(step.tokens for step in self.steps)

    @property
    def seconds(self) -> float:
        return sum(step.seconds for step in self.steps)


Confirm = Callable[[str, dict[str, Any]], bool]


class Agent:
    """A model with tools: `Agent("smollm2", tools=[f, g]).run("question")`."""

    def __init__(
        self,
        model: Any = "smollm2",
        tools: Sequence[Any] = (),
        *,
        system: str | None = None,
        max_steps: int = 8,
        max_repeats: int = MAX_REPEATS,
        result_chars: int = DEFAULT_RESULT_CHARS,
        confirm: Confirm | None = None,
        require_tool: bool = True,
        base_url: str | None = None,
        api_key: str | None = None,
        engine: str = "llamacpp",
        context_length: int | None = None,
        **params: Any,
    ) -> None:
        if not 1 <= max_steps <= 100:
            raise InvalidParameterError("max_steps must be between 1 and 100.")
        if not 0 <= max_repeats <= 100:
            raise InvalidParameterError("max_repeats must be between 0 and 100.")
        if not 100 <= result_chars <= 1_000_000:
            raise InvalidParameterError("result_chars must be between 100 and 1,000,000.")
        self.tools: dict[str, Tool] = {}
        for value in tools:
            made = as_tool(value)
            if made.name in self.tools:
                raise ToolError(f"Two tools are named '{made.name}'; give each its own name.")
            self.tools[made.name] = made
        self.system = system
        self.max_steps, self.max_repeats, self.result_chars = max_steps, max_repeats, result_chars
        self.confirm = confirm
        specs = [*(tool.spec() for tool in self.tools.values()), FINAL_SPEC]
        params = {"temperature": 0.0} | params
        self.backend: LocalBackend | RemoteBackend
        self._owns_model = False
        if base_url is not None:
            if not isinstance(model, str):
                raise InvalidParameterError("With base_url, model is the server's model name.")
            self.model = None
            self.backend = RemoteBackend(
                base_url, model, specs, FINAL_ANSWER, require_tool, params, api_key
            )
        else:
            self._owns_model = isinstance(model, str)
            if isinstance(model, str):
                from llmkit.model import load

                model = load(model, engine=engine, context_length=context_length)
            self.model = model
            self.backend = LocalBackend(
                model, specs, FINAL_ANSWER, require_tool, model.params(**params)
            )
        self._specs = specs

    @property
    def specs(self) -> list[dict[str, Any]]:
        """The tools as the model is shown them, final_answer last."""
        return list(self._specs)

    def close(self) -> None:
        """Free the model, if the agent loaded it (a Model you passed in stays yours)."""
        if self._owns_model and self.model is not None:
            self.model.close()

    def __enter__(self) -> Agent:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- running ---------------------------------------------------------------------------
    def run(self, task: str) -> AgentResult:
        """Work on a task until an answer; returns the answer and every step."""
        result = None
        for event in self.stream(task):
            if isinstance(event, AgentResult):
                result = event
        assert result is not None
        return result

    def stream(self, task: str) -> Iterator[Step | AgentResult]:
        """The same run as events: each Step as it finishes, then the AgentResult."""
        if not isinstance(task, str) or not task.strip():
            raise InvalidParameterError("The task must be non-empty text.")
        messages = self._opening(task)
        steps: list[Step] = []
        try:
            yield from self._steps(messages, steps)
        except ContextFull as full:
            yield AgentResult(_last_result(steps), steps, "context", messages, str(full))

    def _steps(
        self, messages: list[dict[str, Any]], steps: list[Step]
    ) -> Iterator[Step | AgentResult]:
        seen: dict[str, int] = {}
        for number in range(self.max_steps):
            step, calls = self._reply(messages, "any" if number else "first")
            messages.append(_assistant_calls(step.text, calls, self.backend.native))
            for index, call in enumerate(calls):
                if index:  # several calls in one reply: the reply's cost is on the first
                    step = Step(call.name, text=step.text)
                if call.name == FINAL_ANSWER:
                    steps.append(_answer_step(step, call))
                    yield steps[-1]
                    yield AgentResult(steps[-1].result or "", steps, "answer", messages)
                    return
                key = json.dumps([call.name, call.arguments], sort_keys=True)
                seen[key] = seen.get(key, 0) + 1
                if seen[key] > self.max_repeats + 1:
                    step.tool, step.arguments = call.name, call.arguments
                    step.error = (
                        f"The model called {call.name} with the same arguments "
                        f"{seen[key]} times; stopped."
                    )
                    steps.append(step)
                    yield step
                    yield AgentResult(_last_result(steps), steps, "repeated", messages, step.error)
                    return
                self._call(step, call)
                steps.append(step)
                yield step
                content = step.result if step.error is None else f"Error: {step.error}"
                messages.append(
                    {"role": "tool", "tool_call_id": call.id, "name": call.name, "content": content}
                )
        # Out of steps: one more reply, which must be the answer, from what was found.
        messages.append({"role": "user", "content": FINAL_PROMPT})
        step, calls = self._reply(messages, "answer")
        messages.append(_assistant_calls(step.text, calls, self.backend.native))
        steps.append(_answer_step(step, calls[0]) if calls else step)
        yield steps[-1]
        note = f"No answer within {self.max_steps} steps; this answer is a best effort."
        yield AgentResult(steps[-1].result or "", steps, "max_steps", messages, note)

    # ---- one step -------------------------------------------------------------------------
    def _opening(self, task: str) -> list[dict[str, Any]]:
        system = self.system or ""
        if not self.backend.native:
            note = tool_system_message(self._specs)
            system = f"{system}\n\n{note}" if system else note
        messages: list[dict[str, Any]] = []
        if system:
            messages.append({"role": "system", "content": system})
        messages.append({"role": "user", "content": task})
        return messages

    def _reply(
        self, messages: list[dict[str, Any]], kind: ReplyKind
    ) -> tuple[Step, list[ToolCall]]:
        started = time.perf_counter()
        reply = self.backend.reply(messages, kind)
        step = Step(
            None,
            text=reply.text,
            error=reply.error,
            tokens=reply.tokens,
            cached_tokens=reply.cached_tokens,
            seconds=time.perf_counter() - started,
        )
        return step, reply.calls

    def _call(self, step: Step, call: ToolCall) -> None:
        started = time.perf_counter()
        step.tool, step.arguments = call.name, call.arguments
        tool = self.tools.get(call.name)
        try:
            if tool is None:
                raise ToolError(f"There is no tool named {call.name}.")
            arguments = coerce_arguments(tool, call.arguments)
            step.arguments = arguments
            if tool.confirm or self.confirm is not None:
                approve = self.confirm or (lambda name, args: False)
                if not approve(tool.name, arguments):
                    raise ToolError(f"The user declined the call to {tool.name}.")
            step.result = _cut(call_tool(tool, arguments), self.result_chars)
        except ToolError as error:
            step.error = str(error)
        step.seconds += time.perf_counter() - started


def _assistant_calls(text: str, calls: list[ToolCall], native: bool) -> dict[str, Any]:
    """The assistant turn that made these calls, as chat templates (and training data) hold it."""
    content, _ = parse_tool_calls(text)
    return {
        "role": "assistant",
        "content": (content or "") if native else text.strip(),
        "tool_calls": [
            {
                "id": call.id,
                "type": "function",
                "function": {"name": call.name, "arguments": call.arguments},
            }
            for call in calls
        ],
    }


def _answer_step(step: Step, call: ToolCall) -> Step:
    """The final-answer call as the run's last step: no tool, the answer as its result."""
    step.tool, step.arguments = None, {}
    step.result = str(call.arguments.get("answer", "")).strip()
    return step


def _cut(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    return f"{text[:limit]}\n[cut: {len(text) - limit:,} more characters]"


def _last_result(steps: list[Step]) -> str:
    """The best answer a stopped run has: the last successful tool result, if any."""
    for step in reversed(steps):
        if step.result is not None:
            return step.result
    return ""
