"""A model's prompt format, worked out once: everything that decides the exact text it is fed.

The template and where it came from, whether a built-in stands in for a model without one, the
BOS/EOS/end-of-turn tokens, whether the tokenizer adds BOS, the texts that end an answer, and what
the template does with tools (found by rendering it with a probe tool). Chat, the inspector, the
template checker, fine-tuning masks, the server's tools and `show` read these facts here instead
of deriving them again.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from llmkit.chat.template import (
    Message,
    end_of_turn_text,
    render_chat_template,
    select_template,
)
from llmkit.chat.tools import NO_TOOL_SYNTAX, ToolSyntax, render_tool_syntax

if TYPE_CHECKING:
    from llmkit.store.model_info import ModelInfo


@dataclass(frozen=True)
class PromptFormat:
    """How one model's conversations become text. Build with `from_info`."""

    template: str | None  # None: no template fits (raw completion only)
    source: str | None  # "model", "override", "builtin:<name>" or "file"; None without one
    bos_token: str | None = None
    eos_token: str | None = None
    eot_token: str | None = None  # the model's own end-of-turn token, when its metadata names one
    add_bos: bool | None = None  # does the tokenizer add BOS to plain text? None: unknown
    special_tokens: dict[str, int] = field(default_factory=dict)
    end_of_turn: str | None = None  # what the template writes after an assistant's words
    # A built-in template stands in because the model has none of its own (and none was asked for).
    fallback: bool = False

    @classmethod
    def from_info(
        cls,
        info: ModelInfo,
        *,
        recipe_override: str | None = None,
        override: str | None = None,
        source: str | None = None,
    ) -> PromptFormat:
        """The format of a model described by its manifest `info`, with any template override.

        `source` names where an override came from when it is not the usual (e.g. "file").
        """
        chosen = select_template(info, recipe_override=recipe_override, override=override)
        template_source, text = chosen if chosen else (None, None)
        if source and template_source == "override":
            template_source = source
        bos, eos = info.bos_token, info.eos_token
        special = info.special_tokens
        end = (
            end_of_turn_text(text, bos_token=bos, eos_token=eos, special_tokens=special)
            if text
            else None
        )
        return cls(
            text,
            template_source,
            bos,
            eos,
            info.eot_token,
            info.add_bos_token,
            dict(special),
            end,
            fallback=bool(text) and not (override or recipe_override or info.chat_template),
        )

    # ---- facts -----------------------------------------------------------------------------
    @property
    def builtin_name(self) -> str | None:
        """The built-in template's name when one is used, else None."""
        if self.source and self.source.startswith("builtin:"):
            return self.source.removeprefix("builtin:")
        return None

    @property
    def stop_texts(self) -> frozenset[str]:
        """The texts whose token ends an answer: EOS, the model's end of turn, the template's."""
        return frozenset(t for t in (self.eos_token, self.eot_token, self.end_of_turn) if t)

    @property
    def raw_adds_bos(self) -> bool:
        """Whether raw completion puts BOS in front: only where the tokenizer says it adds one."""
        return bool(self.add_bos) and self.bos_token is not None

    @property
    def tool_syntax(self) -> ToolSyntax:
        """What the template does with tools, by rendering it with and without a probe tool."""
        if self.template is None:
            return NO_TOOL_SYNTAX
        return _tool_syntax(self)

    @property
    def supports_tools(self) -> bool:
        return self.tool_syntax.native

    # ---- rendering ---------------------------------------------------------------------------
    def render(
        self,
        messages: Sequence[Message],
        *,
        add_generation_prompt: bool = True,
        tools: list[dict[str, Any]] | None = None,
    ) -> str:
        """The exact text for a conversation (the template must exist: check `template`)."""
        assert self.template is not None
        return render_chat_template(
            self.template,
            list(messages),
            bos_token=self.bos_token,
            eos_token=self.eos_token,
            add_generation_prompt=add_generation_prompt,
            tools=tools,
        )


_syntax_cache: dict[tuple[str, str | None, str | None], ToolSyntax] = {}


def _tool_syntax(prompt_format: PromptFormat) -> ToolSyntax:
    assert prompt_format.template is not None
    key = (prompt_format.template, prompt_format.bos_token, prompt_format.eos_token)
    syntax = _syntax_cache.get(key)
    if syntax is None:
        syntax = render_tool_syntax(
            lambda messages, tools: prompt_format.render(messages, tools=tools)
        )
        _syntax_cache[key] = syntax
    return syntax
