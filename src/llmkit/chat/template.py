"""The one chat-template renderer: chat, server, inspector and fine-tuning masks all call it.

Templates are untrusted input (they ship inside downloaded model files), so they run in Jinja's
immutable sandbox with the semantics of Hugging Face `apply_chat_template`.
"""

from __future__ import annotations

import json
from datetime import datetime
from functools import lru_cache
from typing import Any

from jinja2 import TemplateError
from jinja2.ext import loopcontrols
from jinja2.sandbox import ImmutableSandboxedEnvironment

from llmkit.errors import LlmkitError

Message = dict[str, Any]


class TemplateRenderError(LlmkitError):
    """A template that raised (on purpose, via raise_exception, or because it is broken)."""


def _raise_exception(message: str) -> None:
    raise TemplateRenderError(message)


def _tojson(value: Any, ensure_ascii: bool = False, indent: int | None = None,
            separators: tuple[str, str] | None = None, sort_keys: bool = False) -> str:
    # transformers' tojson does not HTML-escape (unlike Jinja's built-in filter).
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators,
                      sort_keys=sort_keys)


def _strftime_now(format: str) -> str:
    return datetime.now().strftime(format)


@lru_cache(maxsize=1)
def _environment() -> ImmutableSandboxedEnvironment:
    environment = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols]
    )
    environment.filters["tojson"] = _tojson
    environment.globals["raise_exception"] = _raise_exception
    environment.globals["strftime_now"] = _strftime_now
    return environment


@lru_cache(maxsize=64)
def _compile(template: str):
    try:
        return _environment().from_string(template)
    except TemplateError as error:
        raise TemplateRenderError(f"The chat template does not compile: {error}") from error


def render_chat_template(
    template: str,
    messages: list[Message],
    *,
    bos_token: str | None = None,
    eos_token: str | None = None,
    add_generation_prompt: bool = True,
    tools: list[dict[str, Any]] | None = None,
    documents: list[dict[str, Any]] | None = None,
    **extra: Any,
) -> str:
    """Render a conversation exactly as transformers' apply_chat_template(tokenize=False) would."""
    try:
        return _compile(template).render(
            messages=messages,
            bos_token=bos_token or "",
            eos_token=eos_token or "",
            add_generation_prompt=add_generation_prompt,
            tools=tools,
            documents=documents,
            **extra,
        )
    except TemplateRenderError:
        raise
    except TemplateError as error:
        raise TemplateRenderError(f"The chat template failed to render: {error}") from error


# Named templates for models that ship without one; chosen from the model's special tokens.
BUILTIN_TEMPLATES: dict[str, str] = {
    "chatml": (
        "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content']"
        " + '<|im_end|>' + '\n' }}{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
    ),
}

_SENTINEL = "\u2063LLMKIT-ASSISTANT-SENTINEL\u2063"


def end_of_turn_text(template: str, *, bos_token: str | None, eos_token: str | None,
                     special_tokens: dict[str, int]) -> str | None:
    """The special token the template writes right after an assistant's words (e.g. <|im_end|>).

    Found by rendering rather than by a table of known formats, so it works for any template.
    """
    try:
        text = render_chat_template(
            template,
            [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": _SENTINEL}],
            bos_token=bos_token, eos_token=eos_token, add_generation_prompt=False,
        )
    except TemplateRenderError:
        return None
    after = text.split(_SENTINEL, 1)[1] if _SENTINEL in text else ""
    after = after.lstrip(" ")
    # The longest special token the tail starts with.
    matches = [token for token in special_tokens if token and after.startswith(token)]
    return max(matches, key=len) if matches else None


# Marker token -> built-in template name, most specific first.
_FALLBACK_MARKERS: list[tuple[str, str]] = [("<|im_start|>", "chatml")]


def choose_fallback_template(special_tokens: dict[str, int]) -> str | None:
    """The name of the built-in template that matches a model's special tokens, if any."""
    for marker, name in _FALLBACK_MARKERS:
        if marker in special_tokens and name in BUILTIN_TEMPLATES:
            return name
    return None
