"""The OpenAI-compatible API: /v1/models, /v1/chat/completions, /v1/completions, /v1/embeddings."""

from __future__ import annotations

import asyncio
import base64
import json
import struct
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, StreamingResponse

from llmkit import __version__
from llmkit.errors import InvalidParameterError, LlmkitError
from llmkit.generation.loop import GenerationResult
from llmkit.server.grammar import response_format_schema
from llmkit.server.schemas import ChatCompletionRequest, CompletionRequest, EmbeddingRequest
from llmkit.server.service import (
    Job,
    ToolCallHold,
    chat_job,
    collect,
    completion_job,
    stream_chunks,
    submit,
)
from llmkit.server.tools import ToolCall, parse_tool_calls

router = APIRouter(prefix="/v1")
FINGERPRINT = f"llmkit-{__version__}"


def openai_error(
    status: int,
    message: str,
    *,
    kind: str = "invalid_request_error",
    code: str | None = None,
    param: str | None = None,
) -> dict[str, Any]:
    return {
        "error": {"message": message, "type": kind, "param": param, "code": code or str(status)}
    }


def _params(
    body: ChatCompletionRequest | CompletionRequest, max_tokens: int | None
) -> dict[str, Any]:
    if body.n != 1:
        raise InvalidParameterError("Only n=1 is supported.")
    if body.logprobs:
        raise InvalidParameterError("logprobs are not supported by this server.")
    return {
        "max_tokens": max_tokens,
        "temperature": body.temperature,
        "top_p": body.top_p,
        "stop": body.stop,
        "seed": body.seed,
        "presence_penalty": body.presence_penalty,
        "frequency_penalty": body.frequency_penalty,
        "top_k": body.top_k,
        "min_p": body.min_p,
        "repeat_penalty": body.repeat_penalty,
        "ignore_eos": body.ignore_eos,
    }


def _usage(result: GenerationResult) -> dict[str, int]:
    usage = result.usage
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
    }


def _finish_reason(result: GenerationResult, calls: list[ToolCall]) -> str:
    if calls:
        return "tool_calls"
    return "length" if result.finish_reason == "length" else "stop"


def _tool_calls_json(calls: list[ToolCall]) -> list[dict[str, Any]]:
    return [
        {
            "id": call.id,
            "type": "function",
            "function": {"name": call.name, "arguments": json.dumps(call.arguments)},
        }
        for call in calls
    ]


def _sse(data: dict[str, Any] | str) -> bytes:
    return f"data: {data if isinstance(data, str) else json.dumps(data)}\n\n".encode()


@router.get("/models")
async def list_models(request: Request) -> dict[str, Any]:
    state = request.app.state.llmkit
    return {
        "object": "list",
        "data": [
            {"id": name, "object": "model", "created": int(served.loaded_at), "owned_by": "llmkit"}
            for name, served in state.models.items()
        ],
    }


@router.get("/models/{name}")
async def get_model(name: str, request: Request) -> dict[str, Any]:
    served = request.app.state.llmkit.get(name)
    return {
        "id": served.name,
        "object": "model",
        "created": int(served.loaded_at),
        "owned_by": "llmkit",
    }


@router.post("/chat/completions")
async def chat_completions(body: ChatCompletionRequest, request: Request) -> Any:
    state = request.app.state.llmkit
    params = _params(body, body.max_completion_tokens or body.max_tokens)
    job = chat_job(
        state,
        body.model,
        [m.model_dump(exclude_none=True) for m in body.messages],
        params,
        schema=response_format_schema(body.response_format),
        tools=body.tools,
        tool_choice=body.tool_choice,
    )
    handle = submit(job)
    ident, created = f"chatcmpl-{uuid.uuid4().hex[:24]}", int(time.time())
    if body.stream:
        include_usage = bool((body.stream_options or {}).get("include_usage"))
        stream = _chat_stream(job, handle, ident, created, include_usage)
        return StreamingResponse(
            stream, media_type="text/event-stream", headers={"Cache-Control": "no-cache"}
        )
    result = await collect(handle, request)
    content, calls = _read_reply(job, result.text)
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if calls:
        message["tool_calls"] = _tool_calls_json(calls)
    return {
        "id": ident,
        "object": "chat.completion",
        "created": created,
        "model": job.served.name,
        "system_fingerprint": FINGERPRINT,
        "choices": [
            {
                "index": 0,
                "message": message,
                "logprobs": None,
                "finish_reason": _finish_reason(result, calls),
            }
        ],
        "usage": _usage(result),
    }


def _read_reply(job: Job, text: str) -> tuple[str | None, list[ToolCall]]:
    if job.tool_plan is None:
        return text, []
    return parse_tool_calls(text)


async def _chat_stream(
    job: Job, handle: Any, ident: str, created: int, include_usage: bool
) -> AsyncIterator[bytes]:
    def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
        return _sse(
            {
                "id": ident,
                "object": "chat.completion.chunk",
                "created": created,
                "model": job.served.name,
                "system_fingerprint": FINGERPRINT,
                "choices": [
                    {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
                ],
            }
        )

    yield chunk({"role": "assistant", "content": ""})
    hold = ToolCallHold(job.tool_plan is not None)
    try:
        async for piece in stream_chunks(handle):
            text = hold.release(piece.text)
            if text:
                yield chunk({"content": text})
    except LlmkitError as error:
        yield _sse(openai_error(500, str(error), kind="server_error"))
        return
    except asyncio.CancelledError:
        raise
    result = handle.result
    calls: list[ToolCall] = []
    if hold.call_text:
        content, calls = parse_tool_calls(hold.call_text)
        if calls:
            yield chunk(
                {
                    "tool_calls": [
                        {"index": i, **call} for i, call in enumerate(_tool_calls_json(calls))
                    ]
                }
            )
        if content:
            yield chunk({"content": content})
    yield chunk({}, _finish_reason(result, calls))
    if include_usage:
        yield _sse(
            {
                "id": ident,
                "object": "chat.completion.chunk",
                "created": created,
                "model": job.served.name,
                "choices": [],
                "usage": _usage(result),
            }
        )
    yield _sse("[DONE]")


@router.post("/completions")
async def completions(body: CompletionRequest, request: Request) -> Any:
    state = request.app.state.llmkit
    prompts = [body.prompt] if isinstance(body.prompt, str) else body.prompt
    if len(prompts) != 1:
        raise InvalidParameterError(
            "Send one prompt per request (a list of exactly one is accepted)."
        )
    # OpenAI's default for this endpoint is 16 tokens.
    job = completion_job(state, body.model, prompts[0], _params(body, body.max_tokens or 16))
    handle = submit(job)
    ident, created = f"cmpl-{uuid.uuid4().hex[:24]}", int(time.time())
    echo = prompts[0] if body.echo else ""

    def choice(text: str, finish: str | None) -> dict[str, Any]:
        return {"text": text, "index": 0, "logprobs": None, "finish_reason": finish}

    if body.stream:
        include_usage = bool((body.stream_options or {}).get("include_usage"))

        async def events() -> AsyncIterator[bytes]:
            base = {
                "id": ident,
                "object": "text_completion",
                "created": created,
                "model": job.served.name,
            }
            if echo:
                yield _sse({**base, "choices": [choice(echo, None)]})
            try:
                async for piece in stream_chunks(handle):
                    finish = None
                    if piece.finish_reason:
                        finish = "length" if piece.finish_reason == "length" else "stop"
                    if piece.text or finish:
                        yield _sse({**base, "choices": [choice(piece.text, finish)]})
            except LlmkitError as error:
                yield _sse(openai_error(500, str(error), kind="server_error"))
                return
            if include_usage:
                yield _sse({**base, "choices": [], "usage": _usage(handle.result)})
            yield _sse("[DONE]")

        return StreamingResponse(
            events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"}
        )
    result = await collect(handle, request)
    return {
        "id": ident,
        "object": "text_completion",
        "created": created,
        "model": job.served.name,
        "system_fingerprint": FINGERPRINT,
        "choices": [choice(echo + result.text, _finish_reason(result, []))],
        "usage": _usage(result),
    }


@router.post("/embeddings")
async def embeddings(body: EmbeddingRequest, request: Request) -> Any:
    served = request.app.state.llmkit.get(body.model)
    inputs = [body.input] if isinstance(body.input, str) else body.input
    if not inputs or not all(isinstance(text, str) for text in inputs):
        raise InvalidParameterError(
            "input must be a string or a list of strings (token arrays are not supported)."
        )
    if body.encoding_format not in (None, "float", "base64"):
        raise InvalidParameterError("encoding_format must be 'float' or 'base64'.")
    embedder = await asyncio.to_thread(lambda: served.embedder)
    data, tokens = [], 0
    for index, text in enumerate(inputs):
        vector, count = await asyncio.to_thread(embedder.embed, text)
        if body.encoding_format == "base64":  # little-endian float32, as OpenAI sends it
            vector = base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
        data.append({"object": "embedding", "index": index, "embedding": vector})
        tokens += count
    return JSONResponse(
        {
            "object": "list",
            "data": data,
            "model": served.name,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }
    )
