"""Server pieces that need no model: exposure rules, schemas to grammars, tool plans and parsing."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("fastapi")

from llmkit.chat.template import render_chat_template
from llmkit.chat.tools import (
    NO_TOOL_SYNTAX,
    ToolSyntax,
    parse_tool_calls,
    plan_tools,
    render_tool_syntax,
    template_messages,
)
from llmkit.errors import InvalidParameterError, ModelNotFoundError
from llmkit.server.grammar import (
    ANY_OBJECT_SCHEMA,
    ollama_format_schema,
    response_format_schema,
)
from llmkit.server.state import (
    ServedModel,
    ServerSettings,
    ServerState,
    check_exposure,
    is_loopback,
)

TOOL = {
    "type": "function",
    "function": {
        "name": "add",
        "parameters": {
            "type": "object",
            "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
            "required": ["a", "b"],
        },
    },
}


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("localhost", True),
        ("::1", True),
        ("[::1]", True),
        ("127.0.0.2", True),
        ("0.0.0.0", False),
        ("192.168.1.5", False),
        ("example.com", False),
        ("::", False),
    ],
)
def test_loopback_detection(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_an_exposed_server_needs_an_api_key() -> None:
    check_exposure(ServerSettings(host="127.0.0.1"))
    check_exposure(ServerSettings(host="0.0.0.0", api_key="secret"))
    with pytest.raises(InvalidParameterError, match="API key"):
        check_exposure(ServerSettings(host="0.0.0.0"))


def test_the_serve_command_refuses_before_loading_anything() -> None:
    from typer.testing import CliRunner

    from llmkit.cli.app import app

    result = CliRunner().invoke(app, ["serve", "--host", "0.0.0.0"], env={"LLMKIT_API_KEY": ""})
    assert isinstance(result.exception, InvalidParameterError)
    assert "API key" in str(result.exception)


def test_response_formats() -> None:
    assert response_format_schema(None) is None
    assert response_format_schema({"type": "text"}) is None
    assert response_format_schema({"type": "json_object"}) == ANY_OBJECT_SCHEMA
    schema = {"type": "object", "properties": {"x": {"type": "number"}}}
    assert (
        response_format_schema(
            {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}
        )
        == schema
    )
    with pytest.raises(InvalidParameterError, match="schema"):
        response_format_schema({"type": "json_schema", "json_schema": {"name": "x"}})
    with pytest.raises(InvalidParameterError, match="not supported"):
        response_format_schema({"type": "xml"})
    assert ollama_format_schema("json") == ANY_OBJECT_SCHEMA
    assert ollama_format_schema(schema) == schema
    with pytest.raises(InvalidParameterError, match="format"):
        ollama_format_schema("yaml")


TAGGED = ToolSyntax(native=True, tagged=True)


def test_tool_plans() -> None:
    assert plan_tools(None, None, NO_TOOL_SYNTAX) is None
    assert plan_tools([TOOL], "none", NO_TOOL_SYNTAX) is None
    required = plan_tools([TOOL], "required", NO_TOOL_SYNTAX)
    assert (
        not required.native and not required.may_answer_in_text and required.grammar.kind == "lark"
    )
    auto = plan_tools([TOOL], "auto", NO_TOOL_SYNTAX)
    assert auto.may_answer_in_text and auto.grammar is not None
    native = plan_tools([TOOL], "auto", TAGGED)
    assert native.native and native.grammar is None
    native_forced = plan_tools([TOOL], "required", TAGGED)
    assert native_forced.native and native_forced.grammar is not None
    with pytest.raises(InvalidParameterError, match="not among the tools"):
        plan_tools([TOOL], {"type": "function", "function": {"name": "other"}}, NO_TOOL_SYNTAX)
    with pytest.raises(InvalidParameterError, match="Each tool"):
        plan_tools([{"type": "function"}], "auto", NO_TOOL_SYNTAX)
    # Parameters are bounded before any grammar engine sees them (a 400, not a crash).
    huge = {"type": "array", "items": {"type": "integer"}, "maxItems": 20000}
    hostile = {"type": "function", "function": {"name": "many", "parameters": huge}}
    with pytest.raises(InvalidParameterError, match="maxItems"):
        plan_tools([hostile], "required", NO_TOOL_SYNTAX)


def _syntax(template: str) -> ToolSyntax:
    return render_tool_syntax(
        lambda messages, tools: render_chat_template(template, messages, tools=tools)
    )


CHATML = "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"


def test_tool_support_is_found_by_rendering_the_template() -> None:
    # A template that merely mentions "tools" (here in a comment and a test) renders none of them.
    mentions = "{# tools #}{% if tools is defined and false %}tools{% endif %}" + CHATML
    assert _syntax(mentions) == NO_TOOL_SYNTAX
    assert _syntax(CHATML) == NO_TOOL_SYNTAX
    lists = "{% if tools %}Functions: {{ tools | tojson }}\n{% endif %}" + CHATML
    assert _syntax(lists) == ToolSyntax(native=True, tagged=False)
    qwen_like = (
        "{% if tools %}<|im_start|>system\n{% for t in tools %}{{ t | tojson }}{% endfor %}"
        "\nCall one as <tool_call>{...}</tool_call><|im_end|>\n{% endif %}" + CHATML
    )
    assert _syntax(qwen_like) == TAGGED
    # A template that fails when given tools does not support them.
    broken = "{% if tools %}{{ raise_exception('no tools') }}{% endif %}" + CHATML
    assert _syntax(broken) == NO_TOOL_SYNTAX


def test_parsing_tool_calls() -> None:
    content, calls = parse_tool_calls('{"name": "add", "arguments": {"a": 1, "b": 2}}')
    assert content is None and calls[0].name == "add" and calls[0].arguments == {"a": 1, "b": 2}
    content, calls = parse_tool_calls(
        'Sure.<tool_call>\n{"name": "add", "arguments": "{\\"a\\": 1}"}\n</tool_call>'
    )
    assert content == "Sure." and calls[0].arguments == {"a": 1}
    assert parse_tool_calls("Just words {not json}") == ("Just words {not json}", [])


def test_template_messages_for_models_without_tool_syntax() -> None:
    messages = template_messages(
        [
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "add", "arguments": '{"a": 1, "b": 2}'},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": "3"},
        ],
        native=False,
    )
    assert json.loads(messages[0]["content"]) == {"name": "add", "arguments": {"a": 1, "b": 2}}
    assert messages[0]["tool_calls"][0]["function"]["arguments"] == {"a": 1, "b": 2}
    assert messages[1] == {"role": "tool", "tool_call_id": "call_1", "content": "3"}
    with pytest.raises(InvalidParameterError, match="not valid JSON"):
        template_messages(
            [{"role": "assistant", "tool_calls": [{"function": {"name": "x", "arguments": "{"}}]}],
            False,
        )


def test_model_names_resolve_with_ollama_tags() -> None:
    class Stub:
        def close(self) -> None: ...

    state = ServerState([ServedModel("smollm2", Stub(), Stub())], ServerSettings())
    assert state.get(None).name == state.get("smollm2:latest").name == "smollm2"
    with pytest.raises(ModelNotFoundError, match="available: smollm2"):
        state.get("llama3")


def test_ollama_minus_one_options_keep_their_ollama_meaning() -> None:
    from llmkit.params import MAX_REPEAT_LAST_N
    from llmkit.params import params_from_ollama as _params
    from llmkit.server.schemas import check_ollama_options

    options = {"seed": -1, "repeat_last_n": -1}
    check_ollama_options(options)
    assert _params(options) == {"seed": None, "repeat_last_n": MAX_REPEAT_LAST_N}
    with pytest.raises(ValueError, match="repeat_last_n"):
        check_ollama_options({"repeat_last_n": -2})
