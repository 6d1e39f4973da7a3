"""Named chat templates for models that ship without one, and the special tokens that identify them.

Each is a plain, tool-less version of its family's format: enough to chat with a model whose file
lost its template. A model's own template, when it has one, always wins.
"""

from __future__ import annotations

from dataclasses import dataclass

# The system prompt, for families whose format has no system turn: it goes in front of the first
# user message, the way those families' own templates do it.
_SYSTEM_INTO_FIRST_USER = (
    "{% set system = messages[0]['content'] if messages and messages[0]['role'] == 'system' "
    "else '' %}"
)


@dataclass(frozen=True)
class BuiltinTemplate:
    name: str
    description: str
    markers: tuple[str, ...]  # special tokens that must all be in a model's vocabulary to pick it
    text: str
    # The family's usual tokens, used when the template is checked on its own (a model's win).
    bos_token: str | None = None
    eos_token: str | None = None
    eot_token: str | None = None


_TEMPLATES = (
    BuiltinTemplate(
        "chatml",
        "ChatML (Qwen, SmolLM, Hermes, many fine-tunes)",
        ("<|im_start|>", "<|im_end|>"),
        "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content']"
        " + '<|im_end|>' + '\n' }}{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}",
        eos_token="<|im_end|>",
    ),
    BuiltinTemplate(
        "llama3",
        "Llama 3 headers (Llama 3.x instruct)",
        ("<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"),
        "{{ bos_token }}{% for message in messages %}"
        "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'"
        " + message['content'] | trim + '<|eot_id|>' }}{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}"
        "{% endif %}",
        bos_token="<|begin_of_text|>",
        eos_token="<|end_of_text|>",
        eot_token="<|eot_id|>",
    ),
    BuiltinTemplate(
        "gemma",
        "Gemma turns (Gemma 1-3 instruct); the system prompt joins the first user turn",
        ("<start_of_turn>", "<end_of_turn>"),
        "{{ bos_token }}"
        + _SYSTEM_INTO_FIRST_USER
        + "{% for message in messages if message['role'] != 'system' %}"
        "{% set role = 'model' if message['role'] == 'assistant' else message['role'] %}"
        "{{ '<start_of_turn>' + role + '\n' + (system + '\n\n' if loop.first and system else '')"
        " + message['content'] | trim + '<end_of_turn>\n' }}{% endfor %}"
        "{% if add_generation_prompt %}{{ '<start_of_turn>model\n' }}{% endif %}",
        bos_token="<bos>",
        eos_token="<eos>",
        eot_token="<end_of_turn>",
    ),
    BuiltinTemplate(
        "mistral",
        "Mistral [INST] (Mistral, Mixtral); the system prompt joins the first user turn",
        ("[INST]", "[/INST]"),
        "{{ bos_token }}"
        + _SYSTEM_INTO_FIRST_USER
        + "{% for message in messages if message['role'] != 'system' %}"
        "{% if message['role'] == 'user' %}"
        "{{ '[INST] ' + (system + '\n\n' if loop.first and system else '')"
        " + message['content'] | trim + ' [/INST]' }}"
        "{% elif message['role'] == 'assistant' %}{{ message['content'] | trim + eos_token }}"
        "{% endif %}{% endfor %}",
        bos_token="<s>",
        eos_token="</s>",
    ),
    BuiltinTemplate(
        "phi3",
        "Phi-3 tags (Phi-3, Phi-3.5 instruct)",
        ("<|user|>", "<|assistant|>", "<|end|>"),
        "{% for message in messages %}{{ '<|' + message['role'] + '|>\n' + message['content']"
        " + '<|end|>\n' }}{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}",
        eos_token="<|endoftext|>",
        eot_token="<|end|>",
    ),
    BuiltinTemplate(
        "granite",
        "Granite roles (IBM Granite 3.x instruct)",
        ("<|start_of_role|>", "<|end_of_role|>"),
        "{% for message in messages %}{{ '<|start_of_role|>' + message['role'] + '<|end_of_role|>'"
        " + message['content'] + '<|end_of_text|>\n' }}{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|start_of_role|>assistant<|end_of_role|>' }}{% endif %}",
        eos_token="<|end_of_text|>",
    ),
)

BUILTINS: dict[str, BuiltinTemplate] = {template.name: template for template in _TEMPLATES}
