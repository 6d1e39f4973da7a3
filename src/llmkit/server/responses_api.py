"""The OpenAI Responses API: POST /v1/responses and GET /v1/responses/{id}.

What the OpenAI Agents SDK and coding agents speak by default. Input items (messages,
`function_call`, `function_call_output`) become the shared conversation; the shared event pipeline
is written back as a Response object or as its typed stream of events. Responses are kept in this
server's memory (the most recent ones, bounded), so `previous_response_id` continues a
conversation and `GET /v1/responses/{id}` reads one back.
"""

from __future__ import annotations

import collections
import json
import threading
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request

from llmkit.chat.tools import ToolCall
from llmkit.errors import InvalidParameterError, ModelNotFoundError
from llmkit.server import service
from llmkit.server.grammar import response_format_schema
from llmkit.server.schemas import ResponsesRequest
from llmkit.server.service import Error, Final, GenerationRequest, Run, TextDelta, ToolCalls

router = APIRouter(prefix="/v1")
MAX_KEPT = 1000  # responses kept for previous_response_id and GET, oldest dropped first


class ResponseStore:
    """The most recent responses and the conversations that led to them, in memory."""

    def __init__(self, limit: int = MAX_KEPT) -> None:
        self.limit = limit
        self._items: collections.OrderedDict[str, tuple[dict[str, Any], list[dict[str, Any]]]] = (
            collections.OrderedDict()
        )
        self._lock = threading.Lock()

    def put(self, response: dict[str, Any], conversation: list[dict[str, Any]]) -> None:
        with self._lock:
            self._items[response["id"]] = (response, conversation)
            while len(self._items) > self.limit:
                self._items.popitem(last=False)

    def get(self, ident: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        with self._lock:
            found = self._items.get(ident)
        if found is None:
            raise ModelNotFoundError(f"There is no stored response '{ident}'.")
        return found


STORE = ResponseStore()


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise InvalidParameterError("A message's content must be text or a list of text parts.")
    parts = []
    for part in content:
        kind = part.get("type") if isinstance(part, dict) else None
        if kind in ("input_text", "output_text", "text"):
            parts.append(str(part.get("text", "")))
        elif kind in ("input_image", "input_file"):
            raise InvalidParameterError("Images and files are not supported by the served models.")
        else:
            raise InvalidParameterError(f"A message part of type {kind!r} is not supported.")
    return "".join(parts)


def conversation(items: str | list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Input items as the shared conversation: messages, assistant calls, tool results."""
    if isinstance(items, str):
        return [{"role": "user", "content": items}]
    messages: list[dict[str, Any]] = []
    for item in items:
        if not isinstance(item, dict):
            raise InvalidParameterError("Each input item must be an object.")
        kind = item.get("type", "message")
        if kind == "message":
            role = item.get("role")
            if role not in ("user", "assistant", "system", "developer"):
                raise InvalidParameterError(
                    f"An input message's role must be user, assistant, system or developer, not {role!r}."
                )
            role = "system" if role == "developer" else role
            messages.append({"role": role, "content": _content_text(item.get("content", ""))})
        elif kind == "function_call":
            try:
                arguments = json.loads(item.get("arguments") or "{}")
            except (TypeError, ValueError):
                raise InvalidParameterError(
                    "A function_call's arguments are not valid JSON."
                ) from None
            call = {
                "id": str(item.get("call_id", "")),
                "type": "function",
                "function": {"name": item.get("name", ""), "arguments": arguments},
            }
            last = messages[-1] if messages else None
            if last and last["role"] == "assistant" and "tool_calls" in last:
                last["tool_calls"].append(call)  # several calls of one turn
            else:
                messages.append({"role": "assistant", "content": "", "tool_calls": [call]})
        elif kind == "function_call_output":
            output = item.get("output", "")
            messages.append(
                {
                    "role": "tool",
                    "tool_call_id": str(item.get("call_id", "")),
                    "content": output if isinstance(output, str) else json.dumps(output),
                }
            )
        else:
            raise InvalidParameterError(f"Input items of type {kind!r} are not supported.")
    return messages


def _tools(body: ResponsesRequest) -> tuple[list[dict[str, Any]] | None, Any]:
    if not body.tools:
        return None, None
    tools = []
    for tool in body.tools:
        if not isinstance(tool, dict) or tool.get("type") != "function" or not tool.get("name"):
            raise InvalidParameterError(
                'Only {"type": "function", "name": ...} tools are supported.'
            )
        function = {
            key: tool[key]
            for key in ("name", "description", "parameters")
            if tool.get(key) is not None
        }
        tools.append({"type": "function", "function": function})
    choice = body.tool_choice
    if isinstance(choice, dict):
        if choice.get("type") != "function":
            raise InvalidParameterError(
                'A tool_choice object must be {"type": "function", "name": ...}.'
            )
        choice = {"type": "function", "function": {"name": choice.get("name")}}
    return tools, choice


def _schema(body: ResponsesRequest) -> dict[str, Any] | None:
    fmt = (body.text or {}).get("format")
    if not fmt:
        return None
    if not isinstance(fmt, dict):
        raise InvalidParameterError("text.format must be an object.")
    if fmt.get("type") == "json_schema":
        return response_format_schema(
            {"type": "json_schema", "json_schema": {"schema": fmt.get("schema")}}
        )
    return response_format_schema(fmt)


def _usage(final: Final) -> dict[str, Any]:
    usage = final.usage
    return {
        "input_tokens": usage.prompt_tokens,
        "input_tokens_details": {"cached_tokens": usage.cached_prompt_tokens},
        "output_tokens": usage.completion_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": usage.total_tokens,
    }


def _message_item(ident: str, text: str, status: str = "completed") -> dict[str, Any]:
    return {
        "type": "message",
        "id": ident,
        "status": status,
        "role": "assistant",
        "content": [{"type": "output_text", "text": text, "annotations": []}]
        if text or status != "in_progress"
        else [],
    }


def _call_item(call: ToolCall) -> dict[str, Any]:
    return {
        "type": "function_call",
        "id": f"fc_{uuid.uuid4().hex[:24]}",
        "call_id": call.id,
        "name": call.name,
        "arguments": json.dumps(call.arguments),
        "status": "completed",
    }


class _Shell:
    """The parts of a Response every event repeats, and the finished object."""

    def __init__(self, body: ResponsesRequest, model: str, tools: Any, choice: Any) -> None:
        self.id = f"resp_{uuid.uuid4().hex[:24]}"
        self.base = {
            "id": self.id,
            "object": "response",
            "created_at": int(time.time()),
            "model": model,
            "instructions": body.instructions,
            "previous_response_id": body.previous_response_id,
            "tools": body.tools or [],
            "tool_choice": body.tool_choice or "auto",
            "parallel_tool_calls": bool(body.parallel_tool_calls)
            if body.parallel_tool_calls is not None
            else False,
            "temperature": body.temperature,
            "top_p": body.top_p,
            "max_output_tokens": body.max_output_tokens,
            "text": body.text or {"format": {"type": "text"}},
            "metadata": body.metadata or {},
            "error": None,
        }

    def response(self, output: list[dict[str, Any]], final: Final | None) -> dict[str, Any]:
        if final is None:
            return {
                **self.base,
                "status": "in_progress",
                "output": output,
                "usage": None,
                "incomplete_details": None,
            }
        cut = final.finish_reason == "length"
        return {
            **self.base,
            "status": "incomplete" if cut else "completed",
            "incomplete_details": {"reason": "max_output_tokens"} if cut else None,
            "output": output,
            "usage": _usage(final),
        }


@router.post("/responses")
async def create_response(body: ResponsesRequest, request: Request) -> Any:
    state = request.app.state.llmkit
    messages: list[dict[str, Any]] = []
    if body.previous_response_id:
        _, messages = STORE.get(body.previous_response_id)
        messages = [dict(m) for m in messages]
    if body.instructions:  # instructions are not carried over from a previous response
        messages = [m for m in messages if m["role"] != "system"]
        messages.insert(0, {"role": "system", "content": body.instructions})
    messages += conversation(body.input)
    tools, choice = _tools(body)
    ask = GenerationRequest(
        body.model,
        {
            "max_tokens": body.max_output_tokens,
            "temperature": body.temperature,
            "top_p": body.top_p,
        },
        messages=messages,
        schema=_schema(body),
        tools=tools,
        tool_choice=choice,
    )
    run = await service.start(state, ask)
    shell = _Shell(body, run.model_name, tools, choice)
    if body.stream:
        return service.stream(
            state,
            run,
            _stream(run, shell, messages, body.store),
            "text/event-stream",
            headers={"Cache-Control": "no-cache"},
        )
    reply = await run.collect(request.is_disconnected)
    output = _output(reply.content, reply.calls)
    response = shell.response(output, reply.final)
    if body.store:
        STORE.put(response, _continued(messages, reply.content, reply.calls))
    return response


def _output(text: str | None, calls: list[ToolCall]) -> list[dict[str, Any]]:
    output = [_message_item(f"msg_{uuid.uuid4().hex[:24]}", text)] if text else []
    return output + [_call_item(call) for call in calls]


def _continued(
    messages: list[dict[str, Any]], text: str | None, calls: list[ToolCall]
) -> list[dict[str, Any]]:
    """The conversation with this reply's turn, for a next request to continue."""
    turn: dict[str, Any] = {"role": "assistant", "content": text or ""}
    if calls:
        turn["tool_calls"] = [
            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
            for c in calls
        ]
    return [*messages, turn]


@router.get("/responses/{ident}")
async def get_response(ident: str) -> Any:
    response, _ = STORE.get(ident)
    return response


async def _stream(
    run: Run, shell: _Shell, messages: list[dict[str, Any]], store: bool
) -> AsyncIterator[bytes]:
    sequence = 0

    def event(kind: str, **data: Any) -> bytes:
        nonlocal sequence
        sequence += 1
        return f"event: {kind}\ndata: {json.dumps({'type': kind, 'sequence_number': sequence - 1, **data})}\n\n".encode()

    yield event("response.created", response=shell.response([], None))
    yield event("response.in_progress", response=shell.response([], None))
    item_id, text, opened = f"msg_{uuid.uuid4().hex[:24]}", "", False
    output: list[dict[str, Any]] = []
    calls: list[ToolCall] = []
    part = {"type": "output_text", "text": "", "annotations": []}
    async for item in run.events():
        if isinstance(item, TextDelta | ToolCalls):
            piece = item.text if isinstance(item, TextDelta) else item.content
            if piece:
                if not opened:
                    opened = True
                    yield event(
                        "response.output_item.added",
                        output_index=0,
                        item=_message_item(item_id, "", "in_progress"),
                    )
                    yield event(
                        "response.content_part.added",
                        item_id=item_id,
                        output_index=0,
                        content_index=0,
                        part=part,
                    )
                text += piece
                yield event(
                    "response.output_text.delta",
                    item_id=item_id,
                    output_index=0,
                    content_index=0,
                    delta=piece,
                    logprobs=[],
                )
        if isinstance(item, ToolCalls | Final) and opened:
            opened = False
            yield event(
                "response.output_text.done",
                item_id=item_id,
                output_index=0,
                content_index=0,
                text=text,
                logprobs=[],
            )
            yield event(
                "response.content_part.done",
                item_id=item_id,
                output_index=0,
                content_index=0,
                part={**part, "text": text},
            )
            done = _message_item(item_id, text)
            output.append(done)
            yield event("response.output_item.done", output_index=0, item=done)
        if isinstance(item, ToolCalls):
            for call in item.calls:
                call_item = _call_item(call)
                index = len(output)
                yield event(
                    "response.output_item.added",
                    output_index=index,
                    item={**call_item, "arguments": "", "status": "in_progress"},
                )
                yield event(
                    "response.function_call_arguments.delta",
                    item_id=call_item["id"],
                    output_index=index,
                    delta=call_item["arguments"],
                )
                yield event(
                    "response.function_call_arguments.done",
                    item_id=call_item["id"],
                    output_index=index,
                    arguments=call_item["arguments"],
                    name=call.name,
                )
                output.append(call_item)
                yield event("response.output_item.done", output_index=index, item=call_item)
            calls = item.calls
        elif isinstance(item, Final):
            response = shell.response(output, item)
            if store:
                STORE.put(response, _continued(messages, text or None, calls))
            kind = (
                "response.incomplete"
                if response["status"] == "incomplete"
                else "response.completed"
            )
            yield event(kind, response=response)
        elif isinstance(item, Error):
            yield event("error", code="server_error", message=item.message, param=None)
