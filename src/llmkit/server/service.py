"""What both APIs share: turn a request into prompt tokens, parameters and a grammar, then run it.

The OpenAI and Ollama modules only translate wire formats; every rule lives here once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from fastapi import Request

from llmkit.errors import InvalidParameterError
from llmkit.generation.batching import BatchRequest, RequestHandle
from llmkit.generation.loop import GenerationChunk, GenerationResult
from llmkit.server.grammar import schema_grammar
from llmkit.server.state import ServedModel, ServerState
from llmkit.server.tools import ToolPlan, plan_tools, template_messages, tool_system_message

log = logging.getLogger("llmkit.server")


@dataclass
class Job:
    """A request ready for the scheduler, and what is needed to read its reply."""

    served: ServedModel
    request: BatchRequest
    tool_plan: ToolPlan | None = None


def sampling_params(served: ServedModel, **overrides: Any) -> Any:
    """The model's defaults with the request's values on top; bad values raise InvalidParameterError."""
    if isinstance(overrides.get("stop"), str):
        overrides["stop"] = [overrides["stop"]]
    return served.model.params(**overrides)


def message_text(content: Any) -> str:
    """OpenAI content may be a list of parts; only text parts can be used by these models."""
    if content is None or isinstance(content, str):
        return content or ""
    texts = []
    for part in content:
        if not isinstance(part, dict) or part.get("type") != "text":
            kind = part.get("type") if isinstance(part, dict) else type(part).__name__
            raise InvalidParameterError(
                f"Message content of type '{kind}' is not supported; send text."
            )
        texts.append(str(part.get("text", "")))
    return "".join(texts)


def chat_job(
    state: ServerState,
    model_name: str | None,
    messages: list[dict[str, Any]],
    params: dict[str, Any],
    *,
    schema: dict[str, Any] | None = None,
    tools: list[dict[str, Any]] | None = None,
    tool_choice: Any = None,
) -> Job:
    served = state.get(model_name)
    model = served.model
    plan = plan_tools(tools, tool_choice, model.template.text if model.template else "")
    if plan is not None and schema is not None:
        raise InvalidParameterError(
            "Use either tools or a response format, not both in one request."
        )
    messages = [
        {**message, "content": message_text(message.get("content"))} for message in messages
    ]
    messages = template_messages(messages, native=bool(plan and plan.native))
    messages = model.with_system(messages)
    if plan is not None and not plan.native:
        note = tool_system_message(plan.tools)
        if messages and messages[0].get("role") == "system":
            messages[0] = {**messages[0], "content": f"{messages[0]['content']}\n\n{note}"}
        else:
            messages.insert(0, {"role": "system", "content": note})
    prompt_ids = model.prompt_ids(messages, tools=plan.tools if plan and plan.native else None)
    if state.settings.log_prompts:
        log.info("prompt for %s: %r", served.name, model.detokenize(prompt_ids))
    grammar = schema_grammar(schema) if schema is not None else (plan.grammar if plan else None)
    request = BatchRequest(
        prompt_ids, sampling_params(served, **params), gbnf_constraint(served, grammar)
    )
    return Job(served, request, plan)


def completion_job(
    state: ServerState,
    model_name: str | None,
    prompt: str,
    params: dict[str, Any],
    *,
    schema: dict[str, Any] | None = None,
) -> Job:
    served = state.get(model_name)
    prompt_ids = served.model.raw_prompt_ids(prompt)
    if state.settings.log_prompts:
        log.info("prompt for %s: %r", served.name, prompt)
    grammar = schema_grammar(schema) if schema is not None else None
    constraint = gbnf_constraint(served, grammar)
    return Job(served, BatchRequest(prompt_ids, sampling_params(served, **params), constraint))


def gbnf_constraint(served: ServedModel, grammar: str | None) -> Any:
    """A factory for the scheduler that compiles a GBNF grammar for the served engine, or None."""
    if grammar is None:
        return None
    engine = served.model.engine
    if not hasattr(engine, "gbnf_constraint"):
        raise InvalidParameterError(
            f"Structured output and tools need the llama.cpp engine here, not {engine.name}."
        )
    return lambda: engine.gbnf_constraint(grammar)


def submit(job: Job) -> RequestHandle:
    """Queue the job; raises QueueFullError (503) or ContextOverflowError (400) at once."""
    return job.served.scheduler.submit(job.request)


class ToolCallHold:
    """With tools, a streamed reply that opens like a call ('{' or '<') is held back, to be sent
    whole as tool calls at the end; any other reply is released as soon as that is clear."""

    def __init__(self, active: bool) -> None:
        self.holding = active
        self.held = ""

    def release(self, text: str) -> str:
        """The text to send now (empty while it is held)."""
        if not text or not self.holding:
            return text
        self.held += text
        stripped = self.held.lstrip()
        if stripped and not stripped.startswith(("{", "<")):
            self.holding = False
            return self.held
        return ""

    @property
    def call_text(self) -> str | None:
        """The held reply, when it stayed held to the end (then it is parsed as tool calls)."""
        return self.held if self.holding and self.held else None


async def stream_chunks(handle: RequestHandle) -> AsyncIterator[GenerationChunk]:
    """The reply piece by piece; leaving early (a closed connection) cancels the generation."""
    try:
        async for chunk in handle:
            yield chunk
    finally:
        handle.cancel()


async def collect(handle: RequestHandle, request: Request) -> GenerationResult:
    """The whole reply; a client that hangs up before it is done cancels the generation."""

    async def watch() -> None:
        while not await request.is_disconnected():
            await asyncio.sleep(0.25)
        handle.cancel()

    watcher = asyncio.create_task(watch())
    try:
        async for _ in handle:
            pass
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
        handle.cancel()
    assert handle.result is not None
    return handle.result
