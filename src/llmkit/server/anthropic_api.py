"""The Anthropic-compatible API: POST /v1/messages, as Anthropic-speaking tools and SDKs call it.

Content blocks are read into the conversation every other API uses (text, `tool_use` as tool
calls, `tool_result` as tool messages), and the shared event pipeline is written back as
Anthropic's message, or as its stream of typed events.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request

from llmkit.chat.tools import ToolCall
from llmkit.errors import InvalidParameterError
from llmkit.server import service
from llmkit.server.schemas import AnthropicMessage, AnthropicRequest
from llmkit.server.service import Error, Final, GenerationRequest, Run, TextDelta, ToolCalls

router = APIRouter(prefix="/v1")


def _text_of(content: Any, where: str) -> str:
    """Text content: a string, or a list of text blocks."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for block in content:
            if not isinstance(block, dict) or block.get("type") != "text":
                kind = block.get("type") if isinstance(block, dict) else type(block).__name__
                raise InvalidParameterError(f"{where} may hold only text blocks, not {kind!r}.")
            parts.append(str(block.get("text", "")))
        return "".join(parts)
    raise InvalidParameterError(f"{where} must be a string or a list of text blocks.")


def conversation(body: AnthropicRequest) -> list[dict[str, Any]]:
    """The request's system prompt and messages as the shared conversation format."""
    messages: list[dict[str, Any]] = []
    if body.system:
        messages.append({"role": "system", "content": _text_of(body.system, "system")})
    for message in body.messages:
        messages.extend(_turns(message))
    return messages


def _turns(message: AnthropicMessage) -> list[dict[str, Any]]:
    if isinstance(message.content, str):
        return [{"role": message.role, "content": message.content}]
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    results: list[dict[str, Any]] = []
    for block in message.content:
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "text":
            texts.append(str(block.get("text", "")))
        elif kind == "tool_use" and message.role == "assistant":
            arguments = block.get("input")
            if not isinstance(arguments, dict) or not block.get("name"):
                raise InvalidParameterError("A tool_use block needs a name and an input object.")
            calls.append(
                {
                    "id": str(block.get("id") or f"toolu_{uuid.uuid4().hex[:24]}"),
                    "type": "function",
                    "function": {"name": block["name"], "arguments": arguments},
                }
            )
        elif kind == "tool_result" and message.role == "user":
            content = _text_of(block.get("content", ""), "A tool_result's content")
            if block.get("is_error"):
                content = f"Error: {content}"
            results.append(
                {
                    "role": "tool",
                    "tool_call_id": str(block.get("tool_use_id", "")),
                    "content": content,
                }
            )
        elif kind == "image":
            raise InvalidParameterError("Images are not supported by the served models.")
        else:
            raise InvalidParameterError(
                f"A {message.role} message cannot hold a {kind!r} block here."
            )
    turns = list(results)
    if calls:
        turns.append({"role": "assistant", "content": "".join(texts), "tool_calls": calls})
    elif texts or not results:
        turns.append({"role": message.role, "content": "".join(texts)})
    return turns


def _tools(body: AnthropicRequest) -> tuple[list[dict[str, Any]] | None, Any]:
    """Anthropic's tools and tool_choice in the shared (OpenAI) form."""
    if not body.tools:
        return None, None
    tools = []
    for tool in body.tools:
        if not isinstance(tool, dict) or not tool.get("name"):
            raise InvalidParameterError("Each tool needs a name (and an input_schema).")
        tools.append(
            {
                "type": "function",
                "function": {
                    "name": tool["name"],
                    "description": tool.get("description", ""),
                    "parameters": tool.get("input_schema") or {"type": "object"},
                },
            }
        )
    choice = body.tool_choice or {"type": "auto"}
    kind = choice.get("type")
    if kind == "tool":
        return tools, {"type": "function", "function": {"name": choice.get("name")}}
    mapped = {"auto": "auto", "any": "required", "none": "none"}.get(str(kind))
    if mapped is None:
        raise InvalidParameterError('tool_choice type must be "auto", "any", "tool" or "none".')
    return tools, mapped


def _params(body: AnthropicRequest) -> dict[str, Any]:
    return {
        "max_tokens": body.max_tokens,
        "temperature": body.temperature,
        "top_p": body.top_p,
        "top_k": body.top_k,
        "stop": body.stop_sequences,
    }


def _stop(final: Final, stops: list[str] | None) -> tuple[str, str | None]:
    """Anthropic's stop_reason and stop_sequence for the reply's end."""
    if final.finish_reason == "tool_calls":
        return "tool_use", None
    if final.finish_reason == "length":
        return "max_tokens", None
    if stops and final.stopped_by in stops:
        return "stop_sequence", final.stopped_by
    return "end_turn", None


def _usage(final: Final) -> dict[str, int]:
    usage = final.usage
    return {
        "input_tokens": usage.prompt_tokens,
        "output_tokens": usage.completion_tokens,
        "cache_read_input_tokens": usage.cached_prompt_tokens,
    }


def _tool_block(call: ToolCall) -> dict[str, Any]:
    return {"type": "tool_use", "id": _tool_id(call), "name": call.name, "input": call.arguments}


def _tool_id(call: ToolCall) -> str:
    return call.id.replace("call_", "toolu_", 1)


@router.post("/messages")
async def messages(body: AnthropicRequest, request: Request) -> Any:
    state = request.app.state.llmkit
    tools, tool_choice = _tools(body)
    ask = GenerationRequest(
        body.model,
        _params(body),
        messages=conversation(body),
        tools=tools,
        tool_choice=tool_choice,
    )
    run = await service.start(state, ask)
    ident = f"msg_{uuid.uuid4().hex[:24]}"
    if body.stream:
        lines = _stream(run, ident, body.stop_sequences)
        return service.stream(
            state, run, lines, "text/event-stream", headers={"Cache-Control": "no-cache"}
        )
    reply = await run.collect(request.is_disconnected)
    content: list[dict[str, Any]] = []
    if reply.content:
        content.append({"type": "text", "text": reply.content})
    content.extend(_tool_block(call) for call in reply.calls)
    stop_reason, stop_sequence = _stop(reply.final, body.stop_sequences)
    return {
        "id": ident,
        "type": "message",
        "role": "assistant",
        "model": run.model_name,
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": stop_sequence,
        "usage": _usage(reply.final),
    }


def _event(kind: str, data: dict[str, Any]) -> bytes:
    return f"event: {kind}\ndata: {json.dumps({'type': kind, **data})}\n\n".encode()


async def _stream(run: Run, ident: str, stops: list[str] | None) -> AsyncIterator[bytes]:
    """Anthropic's event stream: message_start, content blocks with their deltas, message_delta,
    message_stop."""
    message: dict[str, Any] = {
        "id": ident,
        "type": "message",
        "role": "assistant",
        "model": run.model_name,
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": {"input_tokens": len(run.job.request.prompt_ids), "output_tokens": 0},
    }
    yield _event("message_start", {"message": message})
    index, text_open = 0, False
    block: dict[str, Any]
    delta: dict[str, Any]
    async for event in run.events():
        if isinstance(event, TextDelta) and event.text:
            if not text_open:
                block = {"type": "text", "text": ""}
                yield _event("content_block_start", {"index": index, "content_block": block})
                text_open = True
            delta = {"type": "text_delta", "text": event.text}
            yield _event("content_block_delta", {"index": index, "delta": delta})
        elif isinstance(event, ToolCalls):
            if event.content:
                if not text_open:
                    block = {"type": "text", "text": ""}
                    yield _event("content_block_start", {"index": index, "content_block": block})
                    text_open = True
                delta = {"type": "text_delta", "text": event.content}
                yield _event("content_block_delta", {"index": index, "delta": delta})
            if text_open:
                yield _event("content_block_stop", {"index": index})
                index, text_open = index + 1, False
            for call in event.calls:
                block = {
                    "type": "tool_use",
                    "id": _tool_id(call),
                    "name": call.name,
                    "input": {},
                }
                yield _event("content_block_start", {"index": index, "content_block": block})
                delta = {"type": "input_json_delta", "partial_json": json.dumps(call.arguments)}
                yield _event("content_block_delta", {"index": index, "delta": delta})
                yield _event("content_block_stop", {"index": index})
                index += 1
        elif isinstance(event, Final):
            if text_open:
                yield _event("content_block_stop", {"index": index})
            stop_reason, stop_sequence = _stop(event, stops)
            delta = {"stop_reason": stop_reason, "stop_sequence": stop_sequence}
            yield _event("message_delta", {"delta": delta, "usage": _usage(event)})
            yield _event("message_stop", {})
        elif isinstance(event, Error):
            yield _event("error", {"error": {"type": "api_error", "message": event.message}})
