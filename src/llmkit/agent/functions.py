"""Plain Python functions as tools: a JSON schema from type hints and the docstring, and safe calls.

The schema has the shape chat templates expect (Hugging Face's `get_json_schema`): the function's
name, the docstring's summary as its description, and one property per parameter, described by the
docstring's `Args:` section. A call validates and coerces the model's arguments, runs the function
under a timeout (async functions too), and turns every failure into an observation for the model.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import enum
import inspect
import json
import re
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from llmkit.errors import InvalidParameterError

DEFAULT_TIMEOUT = 30.0  # seconds a tool may run before the model is told it timed out
MAX_TIMEOUT = 3600.0

_SIMPLE = {str: "string", int: "integer", float: "number", bool: "boolean"}
# "name (type): text" or "name: text" in an Args: section; later indented lines continue it.
_ARG_LINE = re.compile(r"^\s*(\*{0,2}\w+)\s*(?:\([^)]*\))?\s*:\s*(.*)$")
_SECTIONS = ("args:", "arguments:", "parameters:", "returns:", "return:", "raises:", "yields:")


class ToolError(InvalidParameterError):
    """A function that cannot be a tool (no type hints, an unsupported type, a bad option)."""


@dataclass(frozen=True)
class Tool:
    """A function the model may call, with its JSON schema and the options of `@llmkit.tool`."""

    name: str
    description: str
    parameters: dict[str, Any]
    function: Callable[..., Any] = field(repr=False, compare=False)
    confirm: bool = False  # ask the user before each call
    timeout: float = DEFAULT_TIMEOUT

    def spec(self) -> dict[str, Any]:
        """The OpenAI-style tool entry that chat templates and the tool grammar read."""
        return {
            "type": "function",
            "function": {
                "name": self.name,
                "description": self.description,
                "parameters": self.parameters,
            },
        }


def tool(
    function: Callable[..., Any] | None = None,
    *,
    name: str | None = None,
    confirm: bool = False,
    timeout: float = DEFAULT_TIMEOUT,
) -> Any:
    """Make a function a tool: `@llmkit.tool` or `@llmkit.tool(confirm=True, timeout=10)`.

    The function itself is returned unchanged (it stays callable as before), carrying its Tool.
    """

    def wrap(fn: Callable[..., Any]) -> Callable[..., Any]:
        fn.__llmkit_tool__ = make_tool(fn, name=name, confirm=confirm, timeout=timeout)  # type: ignore[attr-defined]
        return fn

    return wrap(function) if function is not None else wrap


def as_tool(value: Any) -> Tool:
    """A Tool from a Tool, a function decorated with @tool, or a plain function."""
    if isinstance(value, Tool):
        return value
    made = getattr(value, "__llmkit_tool__", None)
    if isinstance(made, Tool):
        return made
    if callable(value):
        return make_tool(value)
    raise ToolError(f"A tool must be a function, not {type(value).__name__}.")


def make_tool(
    function: Callable[..., Any],
    *,
    name: str | None = None,
    confirm: bool = False,
    timeout: float = DEFAULT_TIMEOUT,
) -> Tool:
    tool_name: str = name or getattr(function, "__name__", "") or ""
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_-]{0,63}", tool_name):
        raise ToolError(
            f"A tool's name must be a word of letters, digits, _ or - (at most 64), not {tool_name!r}."
        )
    if not (0 < timeout <= MAX_TIMEOUT):
        raise ToolError(
            f"Tool '{tool_name}': timeout must be between 0 and {MAX_TIMEOUT:g} seconds."
        )
    summary, described = parse_docstring(inspect.getdoc(function) or "")
    return Tool(
        tool_name,
        summary,
        parameters_schema(function, tool_name, described),
        function,
        confirm=confirm,
        timeout=float(timeout),
    )


def parse_docstring(doc: str) -> tuple[str, dict[str, str]]:
    """The summary (text before the sections) and each parameter's text from an `Args:` section."""
    summary: list[str] = []
    described: dict[str, str] = {}
    section: str | None = None
    current: str | None = None
    current_indent = 0
    for line in doc.splitlines():
        stripped = line.strip()
        if stripped.lower() in _SECTIONS:
            section, current = stripped.lower(), None
            continue
        if section is None:
            summary.append(stripped)
            continue
        if section not in ("args:", "arguments:", "parameters:"):
            continue
        match = _ARG_LINE.match(line)
        indent = len(line) - len(line.lstrip())
        if match and (current is None or indent <= current_indent):
            current, current_indent = match.group(1).lstrip("*"), indent
            described[current] = match.group(2).strip()
        elif current and stripped:  # a continuation line of the current parameter
            described[current] = f"{described[current]} {stripped}".strip()
    return " ".join(" ".join(summary).split()), described


def parameters_schema(
    function: Callable[..., Any], name: str, described: dict[str, str]
) -> dict[str, Any]:
    try:
        signature = inspect.signature(function)
        hints = typing.get_type_hints(function)
    except (TypeError, ValueError, NameError) as error:
        raise ToolError(f"Tool '{name}': its signature cannot be read ({error}).") from None
    properties: dict[str, Any] = {}
    required: list[str] = []
    for parameter in signature.parameters.values():
        if parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
            raise ToolError(
                f"Tool '{name}': *{parameter.name} cannot be described to a model; "
                "name every parameter."
            )
        if parameter.name not in hints:
            raise ToolError(
                f"Tool '{name}': parameter '{parameter.name}' has no type hint; "
                "add one (str, int, float, bool, list[...], dict, Literal[...])."
            )
        schema = type_schema(hints[parameter.name], name, parameter.name)
        if parameter.name in described:
            schema = {**schema, "description": described[parameter.name]}
        if parameter.default is parameter.empty:
            required.append(parameter.name)
        properties[parameter.name] = schema
    # A function takes no other keyword, so the grammar admits no other key.
    result: dict[str, Any] = {
        "type": "object",
        "properties": properties,
        "additionalProperties": False,
    }
    if required:
        result["required"] = required
    return result


def type_schema(hint: Any, tool_name: str, parameter: str) -> dict[str, Any]:
    """The JSON schema of one type hint; an unsupported one is a ToolError naming the parameter."""
    if hint in _SIMPLE:
        return {"type": _SIMPLE[hint]}
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return {"enum": [member.value for member in hint]}
    origin, arguments = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Literal:
        return {"enum": list(arguments)}
    if origin in (typing.Union, types.UnionType):
        options = [a for a in arguments if a is not type(None)]
        if len(options) == 1:
            inner = type_schema(options[0], tool_name, parameter)
            return {"anyOf": [inner, {"type": "null"}]} if len(arguments) > 1 else inner
        return {"anyOf": [type_schema(a, tool_name, parameter) for a in arguments]}
    if hint in (list, tuple) or origin in (list, tuple):
        if arguments and not (origin is tuple and Ellipsis not in arguments and len(arguments) > 1):
            return {"type": "array", "items": type_schema(arguments[0], tool_name, parameter)}
        return {"type": "array"}
    if hint is dict or origin is dict:
        return {"type": "object"}
    if hint is Any:
        return {}
    shown = getattr(hint, "__name__", repr(hint))
    raise ToolError(
        f"Tool '{tool_name}': parameter '{parameter}' has type {shown}, which a JSON schema "
        "cannot describe; use str, int, float, bool, list[...], dict or Literal[...]."
    )


def coerce_arguments(tool: Tool, arguments: Any) -> dict[str, Any]:
    """The model's arguments checked against the tool's schema, with numbers coerced to the hint."""
    if not isinstance(arguments, dict):
        raise ToolError("The arguments must be a JSON object.")
    import jsonschema

    try:
        jsonschema.validate(arguments, tool.parameters)
    except jsonschema.ValidationError as error:
        where = ".".join(str(part) for part in error.absolute_path) or "arguments"
        raise ToolError(f"Invalid arguments for {tool.name}: {where}: {error.message}.") from None
    properties = tool.parameters.get("properties", {})
    coerced = dict(arguments)
    for key, value in arguments.items():
        kind = properties.get(key, {}).get("type")
        if kind == "number" and isinstance(value, int) and not isinstance(value, bool):
            coerced[key] = float(value)
    return coerced


def call_tool(tool: Tool, arguments: dict[str, Any]) -> str:
    """Run the tool and return its result as text (JSON unless it returned a string).

    Raises ToolError with one sentence for what the model should hear: the function raised, timed
    out, or returned something that is not JSON. A timed-out call keeps running in its thread
    (Python cannot stop it) but is no longer waited for.
    """
    function = tool.function
    if inspect.iscoroutinefunction(function):

        def target() -> Any:
            return asyncio.run(function(**arguments))
    else:

        def target() -> Any:
            return function(**arguments)

    pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix=f"tool-{tool.name}")
    future = pool.submit(target)
    try:
        value = future.result(timeout=tool.timeout)
    except concurrent.futures.TimeoutError:
        raise ToolError(f"{tool.name} did not finish within {tool.timeout:g} seconds.") from None
    except Exception as error:
        text = str(error).strip().splitlines()[0][:300] if str(error).strip() else ""
        raise ToolError(
            f"{tool.name} raised {type(error).__name__}" + (f": {text}" if text else "")
        ) from None
    finally:
        pool.shutdown(wait=False)
    if isinstance(value, str):
        return value
    try:
        return json.dumps(value, ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError):
        raise ToolError(
            f"{tool.name} returned a {type(value).__name__}, which is not JSON; "
            "return a str, number, bool, list or dict."
        ) from None
