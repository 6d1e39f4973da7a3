"""llmkit's renderer against transformers' apply_chat_template, for every template in tests/data/templates.

Each template renders a set of conversations; the text must be byte-identical, or both must raise the
same error. Dropping a new *.json file into the folder adds it to the run.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from llmkit.chat.template import TemplateRenderError, render_chat_template

TEMPLATES_DIR = Path(__file__).resolve().parent.parent / "data" / "templates"

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The current weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "description": "City name, e.g. Zürich"}},
            "required": ["city"],
        },
    },
}
TOOL_CALL = {
    "type": "function",
    "function": {"name": "get_weather", "arguments": {"city": "Paris"}},
}
USER = {"role": "user", "content": "Write me some poetry please."}
SYSTEM = {"role": "system", "content": "You are a terse poet."}
ANSWER = {"role": "assistant", "content": "Roses bloom,\nsilence sings."}

# name -> (messages, add_generation_prompt, tools, documents, extra variables)
CONVERSATIONS: dict[str, tuple[list[dict[str, Any]], bool, Any, Any, dict[str, Any]]] = {
    "single-turn": ([USER], True, None, None, {}),
    "single-turn-no-generation-prompt": ([USER], False, None, None, {}),
    "system": ([SYSTEM, USER], True, None, None, {}),
    "multi-turn": (
        [USER, ANSWER, {"role": "user", "content": "Another, shorter."}],
        True,
        None,
        None,
        {},
    ),
    "assistant-last": ([SYSTEM, USER, ANSWER], False, None, None, {}),
    "consecutive-users": ([USER, USER], True, None, None, {}),
    "non-ascii": (
        [
            {"role": "system", "content": "Antworte auf Deutsch. 日本語もOK."},
            {"role": "user", "content": "Grüße aus Köln — 東京の桜 🌸, «ça va?»"},
            {"role": "assistant", "content": "Привет! 😊  "},
            {"role": "user", "content": "  Ünïcödé with spaces  "},
        ],
        True,
        None,
        None,
        {},
    ),
    "tools-defined": ([USER], True, [WEATHER_TOOL], None, {}),
    "tool-call-and-result": (
        [
            {"role": "user", "content": "What is the weather in Paris?"},
            {"role": "assistant", "content": None, "tool_calls": [TOOL_CALL]},
            {"role": "tool", "name": "get_weather", "content": "22°C, sunny"},
        ],
        True,
        [WEATHER_TOOL],
        None,
        {},
    ),
    "documents": (
        [{"role": "user", "content": "Summarise the document."}],
        True,
        None,
        [{"title": "Note", "text": "Bees dance to share where flowers are."}],
        {},
    ),
    "extra-variables": (
        [SYSTEM, USER],
        True,
        None,
        None,
        {"date_string": "01 Jan 2025", "enable_thinking": False},
    ),
    "reasoning-field": (
        [
            USER,
            {"role": "assistant", "content": "Done.", "reasoning_content": "Think first."},
            USER,
        ],
        True,
        None,
        None,
        {},
    ),
}


def _template_cases() -> list[Any]:
    cases = []
    for path in sorted(TEMPLATES_DIR.glob("*.json")):
        data = json.loads(path.read_text(encoding="utf-8"))
        templates = {"default": data["chat_template"]}
        named = data.get("chat_templates")
        if isinstance(named, dict):
            templates.update(named)
        elif isinstance(named, list):
            templates.update({item["name"]: item["template"] for item in named})
        for name, template in templates.items():
            case_id = path.stem if name == "default" else f"{path.stem}:{name}"
            cases.append(pytest.param(data, template, id=case_id))
    return cases


TEMPLATE_CASES = _template_cases()


def test_the_template_folder_is_not_empty() -> None:
    assert len(TEMPLATE_CASES) >= 10


def _reference_tokenizer(data: dict[str, Any], template: str) -> Any:
    pytest.importorskip("transformers")
    tokenizers = pytest.importorskip("tokenizers")
    from transformers import PreTrainedTokenizerFast

    vocabulary = tokenizers.Tokenizer(tokenizers.models.WordLevel({"[UNK]": 0}, unk_token="[UNK]"))
    return PreTrainedTokenizerFast(
        tokenizer_object=vocabulary,
        bos_token=data.get("bos_token"),
        eos_token=data.get("eos_token"),
        chat_template=template,
    )


def _outcome(call: Any) -> tuple[str, str]:
    """("text", rendered) or ("error", kind: message), comparable across both renderers."""
    import jinja2

    try:
        return "text", call()
    except TemplateRenderError as error:
        kind = "raise_exception" if error.raised_by_template else type(error.__cause__).__name__
        return "error", f"{kind}: {error.reason}"
    except Exception as error:
        kind = "raise_exception" if type(error) is jinja2.TemplateError else type(error).__name__
        return "error", f"{kind}: {error}"


@pytest.mark.parametrize("conversation", list(CONVERSATIONS))
@pytest.mark.parametrize(("data", "template"), TEMPLATE_CASES)
def test_renders_like_apply_chat_template(
    data: dict[str, Any], template: str, conversation: str
) -> None:
    tokenizer = _reference_tokenizer(data, template)
    messages, add_generation_prompt, tools, documents, extra = CONVERSATIONS[conversation]
    expected = _outcome(
        lambda: tokenizer.apply_chat_template(
            messages,
            tools=tools,
            documents=documents,
            add_generation_prompt=add_generation_prompt,
            tokenize=False,
            **extra,
        )
    )
    actual = _render(data, template, conversation)
    assert actual == expected


def _render(data: dict[str, Any], template: str, conversation: str) -> tuple[str, str]:
    messages, add_generation_prompt, tools, documents, extra = CONVERSATIONS[conversation]
    return _outcome(
        lambda: render_chat_template(
            template,
            messages,
            bos_token=data.get("bos_token"),
            eos_token=data.get("eos_token"),
            add_generation_prompt=add_generation_prompt,
            tools=tools,
            documents=documents,
            **extra,
        )
    )


def test_conversations_cover_both_outcomes() -> None:
    """The set must exercise templates that raise on purpose as well as ones that render."""
    outcomes = set()
    for param in TEMPLATE_CASES:
        data, template = param.values
        for conversation in CONVERSATIONS:
            kind, value = _render(data, template, conversation)
            outcomes.add(kind if kind == "text" else value.split(":")[0])
    assert {"text", "raise_exception"} <= outcomes
