"""The renderer's apply_chat_template semantics, the built-in templates and how one is chosen."""

from __future__ import annotations

import dataclasses
import json
from datetime import datetime
from pathlib import Path

import pytest

from llmkit.chat.builtin_templates import BUILTINS
from llmkit.chat.template import (
    BUILTIN_TEMPLATES,
    TemplateRenderError,
    choose_fallback_template,
    describe_template_source,
    end_of_turn_text,
    render_chat_template,
    select_template,
    template_argument,
)
from llmkit.errors import InvalidParameterError
from llmkit.store.model_info import ModelInfo

TEMPLATES_DIR = Path(__file__).resolve().parent.parent / "data" / "templates"
USER = [{"role": "user", "content": "Hi"}]


def _special_tokens(name: str) -> dict[str, int]:
    data = json.loads((TEMPLATES_DIR / f"{name}.json").read_text(encoding="utf-8"))
    return {token: index for index, token in enumerate(data["special_tokens"])}


def test_missing_bos_and_eos_are_undefined_not_empty() -> None:
    template = "{{ bos_token is defined }}|{{ eos_token is defined }}|{{ bos_token }}"
    assert render_chat_template(template, USER) == "False|False|"
    assert (
        render_chat_template(template, USER, bos_token="<s>", eos_token="</s>") == "True|True|<s>"
    )


def test_raise_exception_keeps_the_template_message() -> None:
    with pytest.raises(TemplateRenderError) as caught:
        render_chat_template("{{ raise_exception('Roles must alternate') }}", USER)
    assert caught.value.raised_by_template
    assert caught.value.reason == "Roles must alternate"
    assert str(caught.value) == "The chat template refused this conversation: Roles must alternate"


def test_broken_templates_say_where() -> None:
    with pytest.raises(TemplateRenderError, match=r"does not compile: .* \(line 2\)"):
        render_chat_template("ok\n{% if %}", USER)
    with pytest.raises(TemplateRenderError, match="failed to render: UndefinedError") as caught:
        render_chat_template("{{ messages[0].missing + 'x' }}", USER)
    assert not caught.value.raised_by_template


def test_tojson_like_transformers() -> None:
    template = "{{ messages[0] | tojson }}|{{ messages[0] | tojson(indent=2) }}|{{ 'é<' | tojson(ensure_ascii=True) }}"
    text = render_chat_template(template, [{"role": "user", "content": "<é>"}])
    assert (
        text
        == '{"role": "user", "content": "<é>"}|{\n  "role": "user",\n  "content": "<é>"\n}|"\\u00e9<"'
    )


def test_whitespace_and_loop_controls() -> None:
    template = "{% for m in messages %}\n  {% if loop.index > 1 %}{% break %}{% endif %}{{ m.content }}\n{% endfor %}"
    assert render_chat_template(template, USER * 3) == "Hi\n"


def test_strftime_now_and_extra_variables() -> None:
    text = render_chat_template(
        "{{ strftime_now('%Y') }}|{{ date_string }}", USER, date_string="1 Jan"
    )
    assert text == f"{datetime.now().year}|1 Jan"


def test_inputs_are_cleaned_like_apply_chat_template() -> None:
    messages = [{"role": "assistant", "content": None, "reasoning": "thought"}]
    template = "{{ 'content' in messages[0] }}|{{ messages[0].reasoning_content }}|{{ messages[0].thinking }}"
    assert render_chat_template(template, messages) == "False|thought|thought"
    assert messages == [{"role": "assistant", "content": None, "reasoning": "thought"}]


def test_generation_tag_and_dict_and_namespace() -> None:
    template = (
        "{% set ns = namespace(count=0) %}{% for m in messages %}{% generation %}{{ m.content }}"
        "{% endgeneration %}{% set ns.count = ns.count + 1 %}{% endfor %}|{{ ns.count }}|{{ dict(a=1).a }}"
    )
    assert render_chat_template(template, USER * 2) == "HiHi|2|1"


def test_add_generation_prompt_defaults_to_true() -> None:
    assert render_chat_template(BUILTIN_TEMPLATES["chatml"], USER).endswith(
        "<|im_start|>assistant\n"
    )


def test_tools_must_be_schemas() -> None:
    with pytest.raises(TemplateRenderError, match="JSON schemas"):
        render_chat_template("x", USER, tools=[print])  # type: ignore[list-item]


# ---- built-ins ---------------------------------------------------------------------------------
def test_builtins_render_a_full_conversation() -> None:
    conversation = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": "Bye"},
    ]
    expected = {
        "chatml": "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
        "<|im_start|>assistant\nHello!<|im_end|>\n<|im_start|>user\nBye<|im_end|>\n<|im_start|>assistant\n",
        "llama3": "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|><|start_header_id|>assistant"
        "<|end_header_id|>\n\nHello!<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nBye<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n",
        "gemma": "<bos><start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n<start_of_turn>model\nHello!"
        "<end_of_turn>\n<start_of_turn>user\nBye<end_of_turn>\n<start_of_turn>model\n",
        "mistral": "<s>[INST] Be brief.\n\nHi [/INST]Hello!</s>[INST] Bye [/INST]",
        "phi3": "<|system|>\nBe brief.<|end|>\n<|user|>\nHi<|end|>\n<|assistant|>\nHello!<|end|>\n"
        "<|user|>\nBye<|end|>\n<|assistant|>\n",
        "granite": "<|start_of_role|>system<|end_of_role|>Be brief.<|end_of_text|>\n<|start_of_role|>user"
        "<|end_of_role|>Hi<|end_of_text|>\n<|start_of_role|>assistant<|end_of_role|>Hello!<|end_of_text|>\n"
        "<|start_of_role|>user<|end_of_role|>Bye<|end_of_text|>\n<|start_of_role|>assistant<|end_of_role|>",
    }
    assert set(expected) == set(BUILTINS)
    for name, builtin in BUILTINS.items():
        text = render_chat_template(
            builtin.text, conversation, bos_token=builtin.bos_token, eos_token=builtin.eos_token
        )
        assert text == expected[name], name


@pytest.mark.parametrize(
    ("family", "expected"),
    [
        ("qwen2.5-0.5b-instruct", "chatml"),
        ("llama-3.2-3b-instruct", "llama3"),
        ("gemma-3-1b-it", "gemma"),
        ("mistral-7b-instruct-v0.3", "mistral"),
        ("phi-3.5-mini-instruct", "phi3"),
        ("granite-3.1-1b-a400m-instruct", "granite"),
        ("llama-2-7b-chat", None),
    ],
)
def test_fallback_is_chosen_from_special_tokens(family: str, expected: str | None) -> None:
    assert choose_fallback_template(_special_tokens(family)) == expected


def test_select_template_priority() -> None:
    info = ModelInfo(chat_template="MODEL", special_tokens={"<|im_start|>": 1, "<|im_end|>": 2})
    assert select_template(info, recipe_override="RECIPE", override="gemma") == (
        "builtin:gemma",
        BUILTIN_TEMPLATES["gemma"],
    )
    assert select_template(info, recipe_override="RECIPE", override="{{ x }}") == (
        "override",
        "{{ x }}",
    )
    assert select_template(info, recipe_override="RECIPE") == ("override", "RECIPE")
    assert select_template(info) == ("model", "MODEL")
    assert select_template(dataclasses.replace(info, chat_template=None)) == (
        "builtin:chatml",
        BUILTIN_TEMPLATES["chatml"],
    )
    assert select_template(ModelInfo(special_tokens={"<s>": 1})) is None


def test_fallback_is_announced() -> None:
    assert "chosen from its special tokens (<|im_start|>, <|im_end|>)" in describe_template_source(
        "builtin:chatml", fallback=True
    )
    assert describe_template_source("builtin:chatml") == "built-in 'chatml'"
    assert describe_template_source("model") == "the model's own chat template"


def test_template_argument(tmp_path: Path) -> None:
    assert template_argument("llama3") == "llama3"
    jinja = tmp_path / "mine.jinja"
    jinja.write_text("{{ messages[0].content }}")
    assert template_argument(str(jinja)) == "{{ messages[0].content }}"
    config = tmp_path / "tokenizer_config.json"
    config.write_text(json.dumps({"chat_template": "{{ 'x' }}"}))
    assert template_argument(str(config)) == "{{ 'x' }}"
    with pytest.raises(InvalidParameterError, match="neither a built-in template"):
        template_argument(str(tmp_path / "missing.jinja"))
    config.write_text("{not json")
    with pytest.raises(InvalidParameterError, match="not valid JSON"):
        template_argument(str(config))


@pytest.mark.parametrize(
    ("family", "expected"),
    [
        ("qwen2.5-0.5b-instruct", "<|im_end|>"),
        ("llama-3.2-3b-instruct", "<|eot_id|>"),
        ("gemma-3-1b-it", "<end_of_turn>"),
        ("phi-3.5-mini-instruct", "<|end|>"),
        ("mistral-7b-instruct-v0.3", "</s>"),
        ("llama-2-7b-chat", "</s>"),  # no special-token list: EOS is recognised by itself
        ("c4ai-command-r-v01", "<|END_OF_TURN_TOKEN|>"),
        ("deepseek-r1-distill-qwen-32b", "<｜end▁of▁sentence｜>"),
    ],
)
def test_end_of_turn_text(family: str, expected: str) -> None:
    data = json.loads((TEMPLATES_DIR / f"{family}.json").read_text(encoding="utf-8"))
    special = {token: index for index, token in enumerate(data["special_tokens"])}
    found = end_of_turn_text(
        data["chat_template"],
        bos_token=data["bos_token"],
        eos_token=data["eos_token"],
        special_tokens=special,
    )
    assert found == expected


def test_end_of_turn_text_guesses_token_like_text_without_a_vocabulary() -> None:
    assert (
        end_of_turn_text(
            BUILTIN_TEMPLATES["phi3"], bos_token=None, eos_token=None, special_tokens={}
        )
        == "<|end|>"
    )
    assert (
        end_of_turn_text(
            "{{ messages[0].content }}", bos_token=None, eos_token=None, special_tokens={}
        )
        is None
    )
