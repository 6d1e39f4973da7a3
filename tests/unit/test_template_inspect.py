"""Helpers of the prompt view: special-token highlighting and what the user types."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llmkit.chat.inspect import load_tools, parse_message, split_special
from llmkit.errors import InvalidParameterError


def test_split_special_prefers_the_longest_token() -> None:
    text = "<|im_start|>user\nHi<|im_end|>\n"
    assert split_special(text, ["<|im_end|>", "<|im_start|>", "<|im"]) == [
        ("<|im_start|>", True),
        ("user\nHi", False),
        ("<|im_end|>", True),
        ("\n", False),
    ]
    assert split_special("plain", ["<s>"]) == [("plain", False)]
    assert split_special("", ["<s>"]) == []


def test_parse_message() -> None:
    assert parse_message("user:Hi: there") == {"role": "user", "content": "Hi: there"}
    assert parse_message("Assistant:") == {"role": "assistant", "content": ""}
    for bad in ("Hello", "bot:Hi"):
        with pytest.raises(InvalidParameterError, match="ROLE:TEXT"):
            parse_message(bad)


def test_load_tools(tmp_path: Path) -> None:
    path = tmp_path / "tools.json"
    schema = {"name": "get_time", "parameters": {"type": "object", "properties": {}}}
    path.write_text(json.dumps({"tools": [schema]}))
    assert load_tools(path) == [{"type": "function", "function": schema}]
    wrapped = {"type": "function", "function": schema}
    path.write_text(json.dumps([wrapped]))
    assert load_tools(path) == [wrapped]
    path.write_text("[1, 2]")
    with pytest.raises(InvalidParameterError, match="list of tool definitions"):
        load_tools(path)
    path.write_text("{oops")
    with pytest.raises(InvalidParameterError, match="not valid JSON"):
        load_tools(path)
    with pytest.raises(InvalidParameterError, match="does not exist"):
        load_tools(tmp_path / "missing.json")
