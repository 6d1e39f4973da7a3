"""PromptFormat: every fact of a model's prompt format, worked out once from its description."""

from __future__ import annotations

from llmkit.chat.prompt_format import PromptFormat
from llmkit.store.model_info import ModelInfo

CHATML = {"<|im_start|>": 1, "<|im_end|>": 2, "<|endoftext|>": 0}
OWN = (
    "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
WITH_TOOLS = (
    "{% if tools %}<tools>{{ tools | tojson }}</tools>Call with <tool_call>{}</tool_call>.\n{% endif %}"
    + OWN
)


def test_the_models_own_template_and_its_tokens() -> None:
    info = {
        "chat_template": OWN, "bos_token": None, "eos_token": "<|endoftext|>",
        "special_tokens": CHATML, "add_bos_token": False,
    }  # fmt: skip
    fmt = PromptFormat.from_info(ModelInfo.from_dict(info))
    assert fmt.source == "model" and not fmt.fallback and fmt.builtin_name is None
    assert fmt.end_of_turn == "<|im_end|>"
    assert fmt.stop_texts == {"<|im_end|>", "<|endoftext|>"}
    assert not fmt.raw_adds_bos
    assert fmt.render([{"role": "user", "content": "Hi"}]).endswith("<|im_start|>assistant\n")
    assert not fmt.supports_tools


def test_a_built_in_stands_in_for_a_model_without_a_template() -> None:
    fmt = PromptFormat.from_info(
        ModelInfo.from_dict({"special_tokens": CHATML, "bos_token": "<s>"})
    )
    assert fmt.builtin_name == "chatml" and fmt.fallback
    assert fmt.raw_adds_bos  # no add_bos_token recorded: older manifests added BOS
    chosen = PromptFormat.from_info(
        ModelInfo.from_dict({"special_tokens": CHATML}), override="chatml"
    )
    assert chosen.builtin_name == "chatml" and not chosen.fallback  # asked for, not a stand-in


def test_no_template_fits() -> None:
    fmt = PromptFormat.from_info(ModelInfo.from_dict({"special_tokens": {}}))
    assert fmt.template is None and fmt.source is None and fmt.end_of_turn is None
    assert not fmt.supports_tools


def test_tool_support_is_found_by_rendering() -> None:
    fmt = PromptFormat.from_info(
        ModelInfo.from_dict({"chat_template": WITH_TOOLS, "special_tokens": CHATML})
    )
    assert fmt.supports_tools and fmt.tool_syntax.tagged
    # A template that only mentions tools in a comment does not render them.
    fake = PromptFormat.from_info(
        ModelInfo.from_dict(
            {"chat_template": "{# tools <tool_call> #}" + OWN, "special_tokens": CHATML}
        )
    )
    assert not fake.supports_tools


def test_a_file_override_is_named_as_such() -> None:
    fmt = PromptFormat.from_info(
        ModelInfo.from_dict({"chat_template": OWN}), override=OWN, source="file"
    )
    assert fmt.source == "file" and not fmt.fallback
