"""Tool calls: prompting and constraining a model to call functions, and reading its calls back.

A model whose chat template knows tools gets them through the template, and its own syntax
(`<tool_call>{...}</tool_call>`, or a bare JSON call) is parsed. Any other model is told about the
tools in a system message and a grammar makes its reply a well-formed call. Whether a template
knows tools is found by rendering it with one, never by searching its text.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from llmkit.errors import InvalidParameterError
from llmkit.generation.constraints import Grammar, json_rule, validate_schema


@dataclass
class ToolPlan:
    """How one request uses tools."""

    tools: list[dict[str, Any]]
    native: bool  # the chat template renders the tools itself
    grammar: Grammar | None  # constrains the reply; None lets the model answer freely
    may_answer_in_text: bool  # "auto": the reply may be plain text instead of a call


@dataclass
class ToolCall:
    name: str
    arguments: dict[str, Any]
    id: str = field(default_factory=lambda: f"call_{uuid.uuid4().hex[:24]}")


@dataclass(frozen=True)
class ToolSyntax:
    """What a chat template does with tools, as seen by rendering it with one."""

    native: bool  # the template writes the tool definitions into the prompt
    tagged: bool  # ... and asks for calls wrapped in <tool_call> tags


NO_TOOL_SYNTAX = ToolSyntax(native=False, tagged=False)
_PROBE_NAME = "llmkit_probe_function"
_PROBE_TOOL = {
    "type": "function",
    "function": {
        "name": _PROBE_NAME,
        "description": "Checks whether the chat template renders tools.",
        "parameters": {"type": "object", "properties": {"x": {"type": "string"}}},
    },
}
_TAG = "<tool_call>"
MAX_CALLS = 8  # tool calls one tagged reply may make


def render_tool_syntax(
    render: Callable[[list[dict[str, Any]], list[dict[str, Any]] | None], str],
) -> ToolSyntax:
    """Render one user turn with and without a probe tool; the difference says what tools do.

    `render(messages, tools)` returns the prompt text. A template that fails to render, or renders
    the same text either way, does not know tools.
    """
    messages = [{"role": "user", "content": "Hello."}]
    try:
        plain = render(messages, None)
        with_tool = render(messages, [_PROBE_TOOL])
    except Exception:  # a template that cannot render tools does not support them
        return NO_TOOL_SYNTAX
    if _PROBE_NAME not in with_tool or _PROBE_NAME in plain:
        return NO_TOOL_SYNTAX
    return ToolSyntax(native=True, tagged=_TAG in with_tool and _TAG not in plain)


def model_tool_syntax(model: Any) -> ToolSyntax:
    """The tool syntax of a loaded model's template (its PromptFormat renders it once)."""
    prompt_format = getattr(model, "format", None)
    return prompt_format.tool_syntax if prompt_format is not None else NO_TOOL_SYNTAX


def _function(tool: dict[str, Any]) -> dict[str, Any]:
    function = tool.get("function") if isinstance(tool, dict) else None
    if (
        tool.get("type", "function") != "function"
        or not isinstance(function, dict)
        or not function.get("name")
    ):
        raise InvalidParameterError(
            'Each tool must be {"type": "function", "function": {"name": ...}}.'
        )
    return function


def plan_tools(
    tools: list[dict[str, Any]] | None, tool_choice: Any, syntax: ToolSyntax
) -> ToolPlan | None:
    """Decide how this request calls tools; None when it does not (no tools, or choice "none")."""
    if not tools or tool_choice == "none":
        return None
    functions = [_function(tool) for tool in tools]
    for function in functions:
        if function.get("parameters") is not None:
            validate_schema(function["parameters"])  # bounded before any grammar engine sees it
    names = [function["name"] for function in functions]
    forced: list[dict[str, Any]] = functions
    if isinstance(tool_choice, dict):
        name = (tool_choice.get("function") or {}).get("name")
        if name not in names:
            raise InvalidParameterError(
                f"tool_choice names '{name}', which is not among the tools given."
            )
        forced = [function for function in functions if function["name"] == name]
    elif tool_choice not in (None, "auto", "required"):
        raise InvalidParameterError(
            'tool_choice must be "none", "auto", "required" or a named function.'
        )
    free = tool_choice in (None, "auto")
    native = syntax.native
    if native and free:
        return ToolPlan(tools, native=True, grammar=None, may_answer_in_text=True)
    call = (
        {"anyOf": [_call_schema(function) for function in forced]}
        if len(forced) > 1
        else _call_schema(forced[0])
    )
    if native and syntax.tagged:
        # Up to MAX_CALLS tagged calls in one reply ("auto" never gets here: see above).
        start = f'start: block ("\\n" block){{0,{MAX_CALLS - 1}}}'
        start += '\nblock: "<tool_call>\\n" call "\\n</tool_call>"'
    elif free:
        # Either a call (the reply opens with "{") or plain text that does not.
        start = "start: call | TEXT\nTEXT: /[^{\\x00][^\\x00]*/"
    else:
        start = "start: call"
    # llguidance on every engine: the same grammar, compiled once here, so that a schema it
    # cannot express is a 400 before the request is queued.
    grammar = Grammar.from_lark(f"{start}\ncall: {json_rule(call)}\n")
    return ToolPlan(tools, native=native, grammar=grammar, may_answer_in_text=free)


def _call_schema(function: dict[str, Any]) -> dict[str, Any]:
    parameters = function.get("parameters") or {"type": "object", "properties": {}}
    return {
        "type": "object",
        "properties": {"name": {"const": function["name"]}, "arguments": parameters},
        "required": ["name", "arguments"],
        "additionalProperties": False,
    }


def tool_system_message(tools: list[dict[str, Any]]) -> str:
    """Tells a model without tool syntax which functions exist and how to call one."""
    lines = [
        "You can call these functions. To call one, reply with only a JSON object of the form "
        '{"name": <function name>, "arguments": <arguments object>}.',
    ]
    for tool in tools:
        function = _function(tool)
        lines.append(
            json.dumps(
                {
                    "name": function["name"],
                    "description": function.get("description", ""),
                    "parameters": function.get("parameters") or {},
                }
            )
        )
    return "\n".join(lines)


_TAGGED = re.compile(r"<tool_call>\s*(.*?)\s*</tool_call>", re.DOTALL)


def parse_tool_calls(text: str) -> tuple[str | None, list[ToolCall]]:
    """Split a reply into its text and its tool calls (tagged blocks, or one bare JSON call)."""
    blocks = _TAGGED.findall(text)
    candidates = blocks or [text.strip()]
    calls = [call for block in candidates if (call := _as_call(block)) is not None]
    if not calls:
        return text, []
    content = _TAGGED.sub("", text).strip() if blocks else ""
    return content or None, calls


def _as_call(text: str) -> ToolCall | None:
    try:
        data = json.loads(text)
    except ValueError:
        return None
    if not isinstance(data, dict) or not isinstance(data.get("name"), str):
        return None
    arguments = data.get("arguments", data.get("parameters", {}))
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments)
        except ValueError:
            return None
    return ToolCall(data["name"], arguments if isinstance(arguments, dict) else {})


def template_messages(messages: list[dict[str, Any]], native: bool) -> list[dict[str, Any]]:
    """Messages as the chat template expects them.

    OpenAI sends call arguments as a JSON string and may leave an assistant's content empty;
    templates expect a dict and a string. A template without tool syntax sees each earlier call
    as the JSON the model would have written.
    """
    prepared = []
    for message in messages:
        message = dict(message)
        calls = message.get("tool_calls") or []
        normalised = []
        for call in calls:
            function = dict(call.get("function") or {})
            arguments = function.get("arguments")
            if isinstance(arguments, str):
                try:
                    function["arguments"] = json.loads(arguments) if arguments.strip() else {}
                except ValueError as error:
                    raise InvalidParameterError(
                        "A tool call's arguments are not valid JSON."
                    ) from error
            normalised.append({**call, "type": "function", "function": function})
        if normalised:
            message["tool_calls"] = normalised
        if message.get("content") is None:
            message["content"] = ""
        if not native and normalised and not message["content"]:
            message["content"] = "\n".join(
                json.dumps(
                    {
                        "name": c["function"].get("name"),
                        "arguments": c["function"].get("arguments", {}),
                    }
                )
                for c in normalised
            )
        prepared.append({key: value for key, value in message.items() if value is not None})
    return prepared


class ToolCallHold:
    """Holds back the part of a streamed reply that may be a tool call, to be parsed at the end.

    A reply that opens with "{" may be a bare JSON call and is held whole. Anywhere else, text is
    released as it comes, except from a "<tool_call>" tag on (and any tail that could begin one).
    """

    def __init__(self, active: bool) -> None:
        self.active = active
        self.opening = True  # nothing released yet: a "{" here starts a bare call
        self.in_call = False  # from here to the end, everything is held
        self.held = ""

    def release(self, text: str) -> str:
        """The text that may be sent now (empty while it is held)."""
        if not self.active:
            return text
        self.held += text
        if self.in_call:
            return ""
        if self.opening:
            stripped = self.held.lstrip()
            if not stripped:
                return ""
            if stripped.startswith("{"):
                self.in_call = True
                return ""
        start = self.held.find(_TAG)
        if start >= 0:
            self.in_call = True
            out, self.held = self.held[:start], self.held[start:]
        else:
            keep = _partial_tag_length(self.held)
            out, self.held = self.held[: len(self.held) - keep], self.held[len(self.held) - keep :]
        if out:
            self.opening = False
        return out

    def finish(self) -> tuple[str, list[ToolCall]]:
        """At the end of the reply: the text still to send, and the calls the held part made."""
        held, self.held = self.held, ""
        if not self.in_call:
            return held, []
        content, calls = parse_tool_calls(held)
        if not calls:
            return held, []  # it looked like a call but was not one: it is text after all
        return content or "", calls


def _partial_tag_length(text: str) -> int:
    """How long a tail of `text` could be the beginning of a <tool_call> tag."""
    for length in range(min(len(_TAG) - 1, len(text)), 0, -1):
        if _TAG.startswith(text[-length:]):
            return length
    return 0
