"""A loaded model: weights in an engine, plus its chat template and stop tokens.

This is the library every interface shares (CLI, server, notebooks): render a conversation with the
model's own template, tokenize it, and run the one generation loop.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from llmkit.chat.prompt_format import PromptFormat
from llmkit.chat.template import Message, TemplateRenderError
from llmkit.engines import check_engine_name
from llmkit.engines.base import Engine, EngineOptions, TokenConstraint
from llmkit.errors import LlmkitError
from llmkit.generation.loop import GenerationResult, GenerationStream
from llmkit.messages import check_messages
from llmkit.params import SamplingParams
from llmkit.store.store import ModelManifest, ModelStore

if TYPE_CHECKING:
    from llmkit.generation.scoring import Score, TokenChance


@dataclass(frozen=True)
class ChatTemplate:
    """The template a model is rendered with, and where it came from."""

    source: str  # "model", "override", or "builtin:<name>"
    text: str


def open_engine(manifest: ModelManifest, engine: str, options: EngineOptions) -> Engine:
    check_engine_name(engine)
    if manifest.adapter:
        if engine != "llamacpp":
            raise LlmkitError(
                f"'{manifest.name}' is a LoRA adapter in GGUF form, which only the llama.cpp engine "
                "applies; use --engine llamacpp (or the merged '-hf' export with transformers)."
            )
        options = replace(options, adapter_path=options.adapter_path or manifest.adapter)
    if engine == "llamacpp":
        from llmkit.engines.llamacpp import LlamaCppEngine

        return LlamaCppEngine(manifest, options)
    from llmkit.engines.transformers import TransformersEngine

    return TransformersEngine(manifest, options)


class Model:
    """Use `llmkit.load()` to get one."""

    def __init__(
        self, manifest: ModelManifest, engine: Engine, template: str | None = None
    ) -> None:
        self.manifest = manifest
        self.engine = engine
        self.name = manifest.name
        # Every fact about the prompt format, worked out once (chat/prompt_format.py).
        self.format = PromptFormat.from_info(
            manifest.info, recipe_override=manifest.template_override, override=template
        )
        fmt = self.format
        self.bos_token, self.eos_token = fmt.bos_token, fmt.eos_token
        self.special_tokens: dict[str, int] = fmt.special_tokens
        self.template = ChatTemplate(fmt.source or "model", fmt.template) if fmt.template else None
        self.end_of_turn_token = fmt.end_of_turn
        self.stop_token_ids = frozenset(
            token for text in fmt.stop_texts if (token := engine.token_id(text)) is not None
        )
        self.default_params = SamplingParams().updated(**(manifest.parameters or {}))
        self.system_prompt = manifest.system_prompt

    @property
    def context_length(self) -> int:
        return self.engine.context_length

    # ---- what the model sees -------------------------------------------------------------
    def render_prompt(
        self,
        messages: Sequence[Message],
        *,
        add_generation_prompt: bool = True,
        tools: list[dict[str, Any]] | None = None,
    ) -> str:
        """The exact text the model is given for a conversation."""
        messages = check_messages(messages)  # every conversation passes here: CLI, API, library
        if self.format.template is None:
            raise LlmkitError(
                f"'{self.name}' has no chat template and none of the built-in ones fits its tokens; "
                f'complete raw text (`llmkit run {self.name} "…" --raw`), or give it a template '
                "(--template NAME with run and chat; a TEMPLATE line in an `llmkit create` recipe "
                "for serve)."
            )
        return self.format.render(
            messages, add_generation_prompt=add_generation_prompt, tools=tools
        )

    def with_system(self, messages: Sequence[Message], system: str | None = None) -> list[Message]:
        """Messages with the given (or the model recipe's) system prompt in front, if none is there,
        and the recipe's opening messages after it."""
        system = system if system is not None else self.system_prompt
        messages = check_messages(messages)
        head = messages[:1] if messages and messages[0].get("role") == "system" else []
        rest = messages[len(head) :]
        # A recipe's opening messages (MESSAGE lines) start every conversation, once.
        opening = [dict(message) for message in self.manifest.messages]
        if opening and rest[: len(opening)] != opening:
            rest = [*opening, *rest]
        if system and not head:
            head = [{"role": "system", "content": system}]
        return [*head, *rest]

    def tokenize(self, text: str, *, add_bos: bool = False) -> list[int]:
        return self.engine.tokenize(text, add_bos=add_bos)

    def detokenize(self, token_ids: Sequence[int]) -> str:
        return b"".join(self.engine.token_bytes(t) for t in token_ids).decode("utf-8", "replace")

    def prompt_ids(
        self, messages: Sequence[Message], tools: list[dict[str, Any]] | None = None
    ) -> list[int]:
        # The template writes any BOS itself (as apply_chat_template does), so none is added here.
        return self.tokenize(self.render_prompt(messages, tools=tools))

    def raw_prompt_ids(self, prompt: str) -> list[int]:
        return self.tokenize(prompt, add_bos=self.format.raw_adds_bos)

    # ---- generation ----------------------------------------------------------------------
    def params(self, params: SamplingParams | None = None, **overrides: Any) -> SamplingParams:
        return (params or self.default_params).updated(**overrides)

    def stream_ids(
        self,
        prompt_ids: Sequence[int],
        params: SamplingParams | None = None,
        cancel: threading.Event | None = None,
        *,
        constraint: TokenConstraint | None = None,
        **overrides: Any,
    ) -> GenerationStream:
        return GenerationStream(
            self.engine,
            prompt_ids,
            self.params(params, **overrides),
            self.stop_token_ids,
            cancel,
            constraint,
        )

    def stream_chat(
        self,
        messages: Sequence[Message],
        params: SamplingParams | None = None,
        cancel: threading.Event | None = None,
        **overrides: Any,
    ) -> GenerationStream:
        return self.stream_ids(
            self.prompt_ids(self.with_system(messages)), params, cancel, **overrides
        )

    def stream_completion(
        self,
        prompt: str,
        params: SamplingParams | None = None,
        cancel: threading.Event | None = None,
        **overrides: Any,
    ) -> GenerationStream:
        return self.stream_ids(self.raw_prompt_ids(prompt), params, cancel, **overrides)

    def chat(
        self, messages: Sequence[Message] | str, *, stream: bool = False, **overrides: Any
    ) -> str | Iterator[str]:
        """Answer a conversation (or one user message). With stream=True, yield text pieces."""
        if isinstance(messages, str):
            messages = [{"role": "user", "content": messages}]
        return _text_or_pieces(self.stream_chat(messages, **overrides), stream)

    def generate(
        self, prompt: str, *, stream: bool = False, raw: bool = True, **overrides: Any
    ) -> str | Iterator[str]:
        """Continue a prompt. raw=True is plain completion; raw=False wraps it as a user message."""
        if not raw:
            return self.chat(prompt, stream=stream, **overrides)
        return _text_or_pieces(self.stream_completion(prompt, **overrides), stream)

    # ---- what the model predicts -----------------------------------------------------------
    def next_tokens(self, text: str, *, top: int = 10, chat: bool = False) -> list[TokenChance]:
        """The most likely next tokens after `text` (as a user message with chat=True)."""
        from llmkit.generation.scoring import next_tokens

        ids = self.next_prompt_ids(text, chat=chat)
        return next_tokens(self.engine, ids, top)

    def next_prompt_ids(self, text: str, *, chat: bool = False) -> list[int]:
        """The tokens `next` predicts from: raw text, or a user turn through the template."""
        if chat:
            return self.prompt_ids(self.with_system([{"role": "user", "content": text}]))
        return self.raw_prompt_ids(text)

    def score(self, text: str) -> Score:
        """Each token's log-probability given the text before it, and the text's perplexity."""
        from llmkit.generation.scoring import score

        return score(self.engine, self.raw_prompt_ids(text))

    def attention(self, text: str) -> tuple[list[str], Any]:
        """The text's tokens and their attention weights, (layers, heads, tokens, tokens):
        row i says how much token i looks at each earlier token (transformers engine)."""
        ids = self.raw_prompt_ids(text)
        tokens = [self.engine.token_bytes(t).decode("utf-8", "replace") for t in ids]
        return tokens, self.engine.attention(ids)

    def embed(self, text: str) -> list[float]:
        """A unit-length vector for the text (mean-pooled hidden states; see docs/server.md)."""
        return self.engine.embed(self.raw_prompt_ids(text))

    def close(self) -> None:
        self.engine.close()

    def __enter__(self) -> Model:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Model({self.name!r}, engine={self.engine.name!r}, context={self.context_length})"


def _text_or_pieces(stream: GenerationStream, as_stream: bool) -> str | Iterator[str]:
    if as_stream:
        return (chunk.text for chunk in stream if chunk.text)
    result = _finish(stream)
    return result.text


def _finish(stream: GenerationStream) -> GenerationResult:
    for _ in stream:
        pass
    assert stream.result is not None
    return stream.result


def load(
    name: str = "smollm2",
    *,
    engine: str = "llamacpp",
    context_length: int | None = None,
    threads: int | None = None,
    device: str | None = None,
    template: str | None = None,
    home: str | None = None,
    verbose: bool = False,
) -> Model:
    """Load a model from the store (or a GGUF path) into an engine, ready to chat."""
    check_engine_name(engine)
    manifest = ModelStore(home).resolve(name)
    options = EngineOptions(
        context_length=context_length, threads=threads, device=device, verbose=verbose
    )
    return Model(manifest, open_engine(manifest, engine, options), template)


__all__ = ["Model", "TemplateRenderError", "load"]
