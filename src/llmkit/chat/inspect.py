"""What the model actually sees: the rendered prompt, its tokens, and how BOS and stopping work.

`llmkit prompt` and `/show` in `llmkit chat` print a PromptView; scripts get it as JSON.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from llmkit.chat.template import Message, describe_template_source
from llmkit.errors import InvalidParameterError
from llmkit.messages import ROLES

if TYPE_CHECKING:
    from llmkit.chat.prompt_format import PromptFormat
    from llmkit.engines.base import Engine
    from llmkit.store.store import ModelManifest


class TemplateChoice(Protocol):
    """The template a model renders with (llmkit.model.ChatTemplate)."""

    @property
    def source(self) -> str: ...

    @property
    def text(self) -> str: ...


class InspectableModel(Protocol):
    """What the view needs of `llmkit.model.Model`."""

    name: str
    bos_token: str | None
    eos_token: str | None
    special_tokens: dict[str, int]
    end_of_turn_token: str | None
    stop_token_ids: frozenset[int]
    format: PromptFormat

    @property
    def manifest(self) -> ModelManifest: ...

    @property
    def engine(self) -> Engine: ...

    @property
    def template(self) -> TemplateChoice | None: ...

    @property
    def context_length(self) -> int: ...

    def render_prompt(
        self,
        messages: list[Message],
        *,
        add_generation_prompt: bool = True,
        tools: list[dict[str, Any]] | None = None,
    ) -> str: ...

    def tokenize(self, text: str, *, add_bos: bool = False) -> list[int]: ...


@dataclass(frozen=True)
class TokenInfo:
    id: int
    piece: str  # the token's text; bytes that are not whole UTF-8 characters as \\x escapes
    special: bool


@dataclass(frozen=True)
class BosReport:
    """Who puts the BOS token in front of the prompt.

    `added_by` is what tokenizing the rendered text with the tokenizer's defaults gives: "template",
    "tokenizer", "both" (a doubled BOS) or "none". `in_prompt` counts the BOS tokens at the start of
    the ids llmkit feeds, which are tokenized without adding special tokens.
    """

    token: str | None
    id: int | None
    written_by_template: bool
    tokenizer_adds: bool | None
    added_by: str
    in_prompt: int
    note: str


@dataclass
class PromptView:
    model: str
    template_source: str
    template_description: str
    text: str
    tokens: list[TokenInfo]
    bos: BosReport
    end_of_turn: str | None
    stop_tokens: list[tuple[str, int]]
    context_length: int
    warnings: list[str] = field(default_factory=list)

    def segments(self, special_texts: list[str] | None = None) -> list[tuple[str, bool]]:
        """The text cut into (piece, is_special) runs, for highlighting special tokens."""
        texts = special_texts if special_texts is not None else self.special_texts
        return split_special(self.text, texts)

    @property
    def special_texts(self) -> list[str]:
        return sorted({token.piece for token in self.tokens if token.special and token.piece})

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["token_count"] = len(self.tokens)
        data["stop_tokens"] = [
            {"text": text, "id": token_id} for text, token_id in self.stop_tokens
        ]
        return data


def split_special(text: str, special_texts: list[str]) -> list[tuple[str, bool]]:
    """Cut text into runs of ordinary text and special-token text (longest token first)."""
    present = sorted(
        (token for token in special_texts if token and token in text), key=len, reverse=True
    )
    if not present:
        return [(text, False)] if text else []
    pattern = re.compile("|".join(re.escape(token) for token in present))
    segments: list[tuple[str, bool]] = []
    position = 0
    for match in pattern.finditer(text):
        if match.start() > position:
            segments.append((text[position : match.start()], False))
        segments.append((match.group(0), True))
        position = match.end()
    if position < len(text):
        segments.append((text[position:], False))
    return segments


def build_prompt_view(
    model: InspectableModel,
    messages: list[Message],
    *,
    tools: list[dict[str, Any]] | None = None,
    add_generation_prompt: bool = True,
) -> PromptView:
    """Render a conversation with the model's template and tokenize it exactly as generation does."""
    text = model.render_prompt(messages, add_generation_prompt=add_generation_prompt, tools=tools)
    ids = model.tokenize(text)
    fmt = model.format
    special_ids = set(fmt.special_tokens.values())
    named = {token for token in (fmt.bos_token, fmt.eos_token, fmt.eot_token) if token}
    tokens = []
    for token_id in ids:
        piece = model.engine.token_bytes(token_id).decode("utf-8", "backslashreplace")
        tokens.append(TokenInfo(token_id, piece, token_id in special_ids or piece in named))
    source = model.template.source if model.template else "none"
    view = PromptView(
        model=model.name,
        template_source=source,
        template_description=describe_template_source(source, fallback=fmt.fallback),
        text=text,
        tokens=tokens,
        bos=_bos_report(model, text, ids),
        end_of_turn=model.end_of_turn_token,
        stop_tokens=sorted(
            (model.engine.token_bytes(token_id).decode("utf-8", "replace"), token_id)
            for token_id in model.stop_token_ids
        ),
        context_length=model.context_length,
    )
    if view.bos.in_prompt > 1:
        view.warnings.append(
            f"The prompt starts with {view.bos.in_prompt} BOS tokens; the template writes it twice."
        )
    if tools and text == model.render_prompt(
        messages, add_generation_prompt=add_generation_prompt, tools=None
    ):
        view.warnings.append(
            "Tools were given but the template does not render them; the model will not see them."
        )
    if model.end_of_turn_token is None:
        view.warnings.append(
            "Assistant turns in this template do not end with one of the model's special tokens, "
            "so only its EOS stops an answer; the template may not fit this model."
        )
    if len(ids) >= model.context_length:
        view.warnings.append(
            f"The prompt is {len(ids)} tokens but the context window holds {model.context_length}."
        )
    return view


def _bos_report(model: InspectableModel, text: str, ids: list[int]) -> BosReport:
    bos = model.format.bos_token
    adds = model.format.add_bos
    if not bos:
        return BosReport(None, None, False, adds, "none", 0, "The model has no BOS token.")
    bos_id = model.special_tokens.get(bos)
    if bos_id is None:
        bos_ids = model.tokenize(bos)
        bos_id = bos_ids[0] if len(bos_ids) == 1 else None
    writes = text.startswith(bos)
    in_prompt = 0
    while bos_id is not None and in_prompt < len(ids) and ids[in_prompt] == bos_id:
        in_prompt += 1
    added_by = {(True, True): "both", (True, False): "template", (False, True): "tokenizer"}.get(
        (writes, bool(adds)), "none"
    )
    setting = "unknown" if adds is None else str(bool(adds)).lower()
    if added_by == "both":
        note = (
            f"The template writes {bos} and the tokenizer would add another (add_bos_token={setting}); "
            f"llmkit tokenizes chat prompts without adding one, so the prompt starts with {in_prompt}."
        )
    elif added_by == "template":
        note = f"The template writes {bos}; the tokenizer adds none (add_bos_token={setting})."
    elif added_by == "tokenizer":
        note = (
            f"The tokenizer adds {bos} to plain text (add_bos_token={setting}) but the template does "
            "not write it, and chat prompts are tokenized without adding it: the prompt has no BOS."
        )
    else:
        note = f"No BOS: the template does not write {bos} and the tokenizer adds none (add_bos_token={setting})."
    return BosReport(bos, bos_id, writes, adds, added_by, in_prompt, note)


# ---- parsing what the user typed -----------------------------------------------------------
def parse_message(spec: str) -> Message:
    """`user:Hello` -> {"role": "user", "content": "Hello"} (the role is everything before the first colon)."""
    role, separator, content = spec.partition(":")
    role = role.strip().lower()
    if not separator or role not in ROLES:
        raise InvalidParameterError(
            f"Messages are written ROLE:TEXT with ROLE one of {', '.join(ROLES)}; got {spec!r}."
        )
    return {"role": role, "content": content}


def load_tools(path: str | Path) -> list[dict[str, Any]]:
    """Tool definitions from a JSON file: a list of schemas, or an object with a "tools" list."""
    path = Path(path).expanduser()
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as error:
        raise InvalidParameterError(f"The tools file {path} does not exist.") from error
    except json.JSONDecodeError as error:
        raise InvalidParameterError(
            f"{path} is not valid JSON ({error.msg}, line {error.lineno})."
        ) from error
    if isinstance(data, dict) and isinstance(data.get("tools"), list):
        data = data["tools"]
    if isinstance(data, dict):
        data = [data]
    if not isinstance(data, list) or not all(isinstance(tool, dict) for tool in data):
        raise InvalidParameterError(f"{path} must hold a JSON list of tool definitions (objects).")
    # Bare function schemas ({"name", "parameters"}) are wrapped the way chat APIs send them.
    return [tool if "function" in tool else {"type": "function", "function": tool} for tool in data]
