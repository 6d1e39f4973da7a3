"""The one chat-template renderer: chat, server, inspector and fine-tuning masks all call it.

Templates are untrusted input (they ship inside downloaded model files), so they run in a hardened
Jinja sandbox (see `sandbox.py`) with the semantics of Hugging Face `apply_chat_template`: the same
variables, globals, filters, whitespace settings and input clean-up, so the text is byte-identical.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jinja2
from jinja2 import TemplateError

from llmkit.chat.builtin_templates import BUILTINS
from llmkit.chat.sandbox import (
    ChatTemplateEnvironment,
    TemplateLimitError,
    TemplateRaised,
    render_bounded,
)
from llmkit.errors import InvalidParameterError, LlmkitError

if TYPE_CHECKING:
    from llmkit.store.model_info import ModelInfo

Message = dict[str, Any]


class TemplateRenderError(LlmkitError):
    """A template that does not compile, raised on purpose (raise_exception), or broke.

    `reason` is the bare message (the template's own for raise_exception, Python's or Jinja's
    otherwise) and `raised_by_template` tells the two apart; `__cause__` holds the original error.
    """

    def __init__(
        self, message: str, *, reason: str | None = None, raised_by_template: bool = False
    ) -> None:
        super().__init__(message)
        self.reason = message if reason is None else reason
        self.raised_by_template = raised_by_template


@lru_cache(maxsize=1)
def _environment() -> ChatTemplateEnvironment:
    return ChatTemplateEnvironment()


@lru_cache(maxsize=64)
def compile_template(template: str) -> jinja2.Template:
    """Compile (and cache) a template, or raise TemplateRenderError saying where it is broken."""
    try:
        return _environment().from_string(template)
    except TemplateError as error:
        line = getattr(error, "lineno", None)
        where = f" (line {line})" if line else ""
        raise TemplateRenderError(
            f"The chat template does not compile: {error.message}{where}.", reason=str(error)
        ) from error


# ---- inputs, cleaned up as apply_chat_template does --------------------------------------------
_REASONING_FIELDS = ("reasoning_content", "thinking", "reasoning")


def plain_data(value: Any) -> Any:
    """A copy built only of JSON types, so a template never touches a caller's objects' methods."""
    if value is None or type(value) in (str, int, float, bool):
        return value
    if isinstance(value, str):  # subclasses (enums, ...) carry extra methods
        return str.__str__(value)
    if isinstance(value, int):
        return int.__int__(value)
    if isinstance(value, float):
        return float.__float__(value)
    if isinstance(value, Mapping):
        return {plain_data(key): plain_data(item) for key, item in value.items()}
    if isinstance(value, list):
        return [plain_data(item) for item in value]
    if isinstance(value, tuple):
        return tuple(plain_data(item) for item in value)
    if type(value).__module__ == "numpy" and hasattr(value, "item"):
        return plain_data(value.item())
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {
            field.name: plain_data(getattr(value, field.name))
            for field in dataclasses.fields(value)
        }
    if callable(getattr(value, "model_dump", None)):  # pydantic models (OpenAI SDK messages)
        return plain_data(value.model_dump())
    return f"<{type(value).__name__}>"


def _prepare_messages(messages: list[Any]) -> list[Message]:
    prepared = []
    for message in plain_data(list(messages)):
        if not isinstance(message, dict):
            raise TemplateRenderError(
                f"Chat messages must be dicts with a role and content, not {message!r}."
            )
        # Keys set to None are dropped: many templates render "None" or crash on them.
        message = {key: value for key, value in message.items() if value is not None}
        reasoning = next(
            (message[key] for key in _REASONING_FIELDS if message.get(key) is not None), None
        )
        if reasoning is not None:
            message = {"thinking": reasoning, **message, "reasoning_content": reasoning}
        prepared.append(message)
    return prepared


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
    """Render a conversation exactly as transformers' apply_chat_template(tokenize=False) would.

    As there, a bos_token or eos_token of None is left undefined in the template, and extra keyword
    arguments become template variables (e.g. date_string, enable_thinking).
    """
    if tools is not None and not all(isinstance(tool, dict) for tool in tools):
        raise TemplateRenderError("Tools must be JSON schemas (dicts with a type and a function).")
    if documents is not None and not all(isinstance(document, dict) for document in documents):
        raise TemplateRenderError("Documents must be dicts with 'title' and 'text' keys.")
    compiled = compile_template(template)
    special = {"bos_token": bos_token, "eos_token": eos_token}
    context = {
        **{name: value for name, value in special.items() if value is not None},
        **plain_data(extra),
        "messages": _prepare_messages(messages),
        "tools": plain_data(tools),
        "documents": plain_data(documents),
        "add_generation_prompt": add_generation_prompt,
    }
    try:
        return render_bounded(compiled, context)
    except TemplateRenderError:
        raise
    except TemplateRaised as error:
        raise TemplateRenderError(
            f"The chat template refused this conversation: {error.template_message}",
            reason=error.template_message,
            raised_by_template=True,
        ) from error
    except TemplateLimitError as error:
        raise TemplateRenderError(
            f"The chat template was stopped: {error}", reason=str(error)
        ) from error
    except RecursionError as error:
        raise TemplateRenderError(
            "The chat template recursed too deeply and was stopped.", reason=str(error)
        ) from error
    except Exception as error:
        # Any other failure of untrusted template code is the template's, not llmkit's.
        raise TemplateRenderError(
            f"The chat template failed to render: {type(error).__name__}: {error}",
            reason=str(error),
        ) from error


# ---- built-in templates and choosing one --------------------------------------------------------
BUILTIN_TEMPLATES: dict[str, str] = {name: builtin.text for name, builtin in BUILTINS.items()}

_SENTINEL = "\u2063LLMKIT-ASSISTANT-SENTINEL\u2063"
# Text that looks like a control token, for templates checked without a list of special tokens:
# <|...|>, <｜...｜>, <...> without spaces, [INST]-style tags.
_TOKEN_LIKE = re.compile(r"<\|[^<>\s]*?\|>|<｜[^<>\s]*?｜>|</?[A-Za-z_][^<>\s]*>|\[/?[A-Z_]+\]")


def end_of_turn_text(
    template: str,
    *,
    bos_token: str | None,
    eos_token: str | None,
    special_tokens: dict[str, int],
) -> str | None:
    """The special token the template writes right after an assistant's words (e.g. <|im_end|>).

    Found by rendering rather than by a table of known formats, so it works for any template. With
    no special-token list it falls back to EOS, then to the first token-like text after the answer.
    """
    try:
        text = render_chat_template(
            template,
            [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": _SENTINEL}],
            bos_token=bos_token,
            eos_token=eos_token,
            add_generation_prompt=False,
        )
    except TemplateRenderError:
        return None
    if _SENTINEL not in text:
        return None
    after = text.split(_SENTINEL, 1)[1].lstrip(" ")
    known = [*special_tokens, *(token for token in (eos_token, bos_token) if token)]
    matches = [token for token in known if token and after.startswith(token)]
    if matches:
        return max(matches, key=len)
    if special_tokens:
        return None
    guess = _TOKEN_LIKE.match(after)
    return guess.group(0) if guess else None


def choose_fallback_template(special_tokens: dict[str, int]) -> str | None:
    """The name of the built-in template whose marker tokens the model's vocabulary has, if any."""
    for name, builtin in BUILTINS.items():
        if all(marker in special_tokens for marker in builtin.markers):
            return name
    return None


def select_template(
    info: ModelInfo, *, recipe_override: str | None = None, override: str | None = None
) -> tuple[str, str] | None:
    """(source, text) of the template a model renders with, by priority.

    An explicit override (a built-in name or template text) wins, then the model recipe's override,
    then the model's own template, then a built-in chosen from its special tokens. The source is
    "override", "model" or "builtin:<name>"; None means no template fits.
    """
    if override is not None:
        require_template_text(override, "The template given")
        if override in BUILTIN_TEMPLATES:
            return f"builtin:{override}", BUILTIN_TEMPLATES[override]
        return "override", override
    if recipe_override:
        return "override", recipe_override
    if info.chat_template and info.chat_template.strip():
        return "model", info.chat_template
    fallback = choose_fallback_template(info.special_tokens)
    return (f"builtin:{fallback}", BUILTIN_TEMPLATES[fallback]) if fallback else None


def describe_template_source(source: str, *, fallback: bool = False) -> str:
    """One line saying where a template came from, e.g. for the header of `llmkit prompt`.

    `fallback` says a built-in was chosen because the model has no template of its own.
    """
    if source == "model":
        return "the model's own chat template"
    if source == "override":
        return "a template override (--template or the model recipe)"
    if source == "file":
        return "a template file"
    if source.startswith("builtin:"):
        name = source.split(":", 1)[1]
        if fallback and name in BUILTINS:
            return (
                f"built-in '{name}': the model has no chat template, so one was chosen from its "
                f"special tokens ({', '.join(BUILTINS[name].markers)})"
            )
        return f"built-in '{name}'"
    return source


def template_argument(value: str) -> str:
    """What a --template option names: a built-in template's name, or the text of a template file.

    A .json file may be a tokenizer_config.json (its chat_template is used).
    """
    if value in BUILTIN_TEMPLATES:
        return value
    path = Path(value).expanduser()
    if not path.is_file():
        raise InvalidParameterError(
            f"--template {value!r} is neither a built-in template ({', '.join(BUILTIN_TEMPLATES)}) "
            "nor a template file."
        )
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".json":
        return chat_template_from_config(parse_config_json(path, text), path)
    return require_template_text(text, f"The template file {path}")


def require_template_text(text: str, what: str) -> str:
    """Template text, refusing a blank one: it would render every conversation as nothing
    (and an empty override would otherwise quietly fall back to the model's own template)."""
    if not text.strip():
        raise InvalidParameterError(
            f"{what} is empty; a chat template must write the conversation's messages."
        )
    return text


def parse_config_json(path: Path, text: str) -> Any:
    """A tokenizer_config.json-style file's data, or one clear error when it is not JSON."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise InvalidParameterError(
            f"{path} is not valid JSON ({error.msg}, line {error.lineno})."
        ) from error


def chat_template_from_config(data: Any, path: Path) -> str:
    """The (default) chat template of a tokenizer_config.json-style object read from `path`."""
    template = data.get("chat_template") if isinstance(data, dict) else None
    if isinstance(template, list):  # tokenizer_config.json's form for several named templates
        named = {
            item.get("name"): item.get("template") for item in template if isinstance(item, dict)
        }
        template = named.get("default") or next(iter(named.values()), None)
    if not isinstance(template, str):
        raise InvalidParameterError(f"{path} has no chat_template.")
    return require_template_text(template, f"The chat_template in {path}")
