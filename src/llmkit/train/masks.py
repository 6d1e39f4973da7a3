"""Token ids and loss masks for training rows, from the model's own chat template.

The assistant's part of a conversation is found by rendering, never by a hand-written marker:
the conversation up to an assistant turn with the generation prompt, and through that turn without
it, are both prefixes of the full text, and the text between them is the answer, end-of-turn token
included. Each piece is tokenized on its own, so the prompt tokens are exactly those the model is
given at inference, and the loss covers only what the model must learn to write.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from llmkit.chat.template import render_chat_template
from llmkit.chat.tools import render_tool_syntax, template_messages, tool_system_message
from llmkit.train.data import DataError, Example, raise_problems

Tokenize = Callable[[str], list[int]]


@dataclass(frozen=True)
class TemplateTokens:
    """What rendering needs besides the template: the special tokens it may refer to."""

    template: str | None
    bos_token: str | None = None
    eos_token: str | None = None
    end_of_turn: str | None = None  # e.g. <|im_end|>; None: use EOS, then trailing whitespace
    bos_id: int | None = None  # for plain-text rows, which get no template
    eos_id: int | None = None
    add_bos: bool = False


@dataclass(frozen=True)
class TokenizedExample:
    source: str
    input_ids: tuple[int, ...]
    trained: tuple[bool, ...]  # True where the loss is computed (the token is predicted)

    @property
    def trained_tokens(self) -> int:
        return sum(self.trained)

    def __len__(self) -> int:
        return len(self.input_ids)


def _render(
    tokens: TemplateTokens,
    messages: Sequence[dict[str, Any]],
    prompt: bool,
    tools: list[dict[str, Any]] | None = None,
) -> str:
    assert tokens.template is not None
    return render_chat_template(
        tokens.template,
        list(messages),
        bos_token=tokens.bos_token,
        eos_token=tokens.eos_token,
        add_generation_prompt=prompt,
        tools=tools,
    )


def tool_conversation(
    tokens: TemplateTokens, messages: Sequence[dict[str, Any]], tools: Sequence[dict[str, Any]]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]] | None]:
    """A tool conversation as the agent loop shows it to this template: (messages, tools to render).

    A template with tool syntax renders the tools and the calls itself. Any other template sees
    the tools in the system message and each call as the JSON the model writes, as at inference
    (llmkit.agent.loop); a system message that already describes them is left as it is.
    """
    native = render_tool_syntax(lambda m, t: _render(tokens, m, True, t)).native
    prepared = template_messages([dict(m) for m in messages], native)
    if native:
        return prepared, list(tools)
    note = tool_system_message(list(tools))
    if not any(note in str(m.get("content")) for m in prepared if m["role"] == "system"):
        if prepared and prepared[0]["role"] == "system":
            prepared[0] = {**prepared[0], "content": f"{prepared[0]['content']}\n\n{note}"}
        else:
            prepared.insert(0, {"role": "system", "content": note})
    return prepared, None


def _answer_end(segment: str, tokens: TemplateTokens) -> int:
    """Where the trained part of an assistant segment ends: just after its end-of-turn token."""
    for marker in (tokens.end_of_turn, tokens.eos_token):
        if marker and marker in segment:
            return segment.rindex(marker) + len(marker)
    # A template with no end-of-turn token: train the answer, not the whitespace that follows it.
    return len(segment.rstrip())


def assistant_spans(
    tokens: TemplateTokens,
    messages: Sequence[dict[str, Any]],
    source: str = "row",
    tools: Sequence[dict[str, Any]] | None = None,
) -> tuple[str, list[tuple[int, int]]]:
    """The rendered conversation and the character spans of each assistant turn in it.

    With tools, an assistant turn's calls are trained like its text; `role: tool` results are
    context only.
    """
    rendered: list[dict[str, Any]] | None = None
    if tools:
        messages, rendered = tool_conversation(tokens, messages, tools)
    full = _render(tokens, messages, prompt=False, tools=rendered)
    spans = []
    for index, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        before = _render(tokens, messages[:index], prompt=True, tools=rendered)
        through = _render(tokens, messages[: index + 1], prompt=False, tools=rendered)
        if not (through.startswith(before) and full.startswith(through)):
            # e.g. templates that drop the reasoning of earlier turns: the text of turn `index` then
            # depends on what follows, and no prefix of the full text is what inference would see.
            raise DataError(
                f"{source}: the chat template renders assistant turn {index} differently depending "
                "on what follows it, so its tokens cannot be masked reliably; split the "
                "conversation into one row per assistant turn."
            )
        start = len(before)
        spans.append((start, start + _answer_end(through[start:], tokens)))
    return full, spans


def tokenize_example(
    example: Example, tokens: TemplateTokens, tokenize: Tokenize
) -> TokenizedExample:
    """Token ids and trained flags for one row (see the module docstring for how)."""
    if example.text is not None:
        text_ids = [tokens.bos_id] if tokens.add_bos and tokens.bos_id is not None else []
        text_ids += tokenize(example.text)
        if tokens.eos_id is not None:
            text_ids.append(tokens.eos_id)  # so a model trained on text also learns where text ends
        text_trained = [True] * len(text_ids)
        if text_ids and tokens.add_bos and tokens.bos_id is not None:
            text_trained[0] = False
        return TokenizedExample(example.source, tuple(text_ids), tuple(text_trained))
    if tokens.template is None:
        raise DataError(
            f"{example.source}: the base model has no chat template; give one with --template."
        )
    full, spans = assistant_spans(tokens, example.messages, example.source, example.tools)
    ids: list[int] = []
    trained: list[bool] = []
    position = 0
    for start, end in spans:
        for text, is_answer in ((full[position:start], False), (full[start:end], True)):
            if text:
                piece = tokenize(text)
                ids.extend(piece)
                trained.extend([is_answer] * len(piece))
        position = end
    # Text after the last answer (a newline, say) is neither trained nor needed as context.
    return TokenizedExample(example.source, tuple(ids), tuple(trained))


@dataclass
class LengthReport:
    """Rows longer than --max-length, and what was done with them."""

    truncated: list[str]
    dropped: list[str]

    def summary(self, max_length: int) -> str | None:
        parts = []
        if self.truncated:
            parts.append(f"{len(self.truncated)} truncated ({', '.join(self.truncated[:3])}…)")
        if self.dropped:
            parts.append(f"{len(self.dropped)} dropped ({', '.join(self.dropped[:3])}…)")
        if not parts:
            return None
        return f"Rows longer than {max_length} tokens: " + "; ".join(parts) + "."


def tokenize_dataset(
    examples: Sequence[Example],
    tokens: TemplateTokens,
    tokenize: Tokenize,
    *,
    max_length: int,
    too_long: str = "truncate",
) -> tuple[list[TokenizedExample], LengthReport]:
    """Every row tokenized; too-long rows truncated or dropped (and reported); problems raised."""
    if too_long not in ("truncate", "drop"):
        raise DataError(f"--too-long must be 'truncate' or 'drop', not {too_long!r}.")
    result: list[TokenizedExample] = []
    report = LengthReport([], [])
    problems: list[str] = []
    for example in examples:
        try:
            tokenized = tokenize_example(example, tokens, tokenize)
        except DataError as error:
            problems.append(str(error))
            continue
        if len(tokenized) > max_length:
            if too_long == "drop":
                report.dropped.append(example.source)
                continue
            tokenized = TokenizedExample(
                tokenized.source,
                tokenized.input_ids[:max_length],
                tokenized.trained[:max_length],
            )
            if tokenized.trained_tokens == 0:
                # Cut before the first answer: nothing is left to learn from this row.
                report.dropped.append(example.source)
                continue
            report.truncated.append(example.source)
        if tokenized.trained_tokens:
            result.append(tokenized)
    raise_problems(problems)
    if not result:
        raise DataError("No row has an assistant answer left to train on (see --max-length).")
    return result, report


def mask_segments(
    example: TokenizedExample, detokenize: Callable[[Sequence[int]], str]
) -> list[tuple[str, bool]]:
    """The row as (text, trained) runs, for showing which tokens the loss covers."""
    runs: list[tuple[str, bool]] = []
    start = 0
    for index in range(1, len(example) + 1):
        if index == len(example) or example.trained[index] != example.trained[start]:
            runs.append((detokenize(example.input_ids[start:index]), example.trained[start]))
            start = index
    return runs
