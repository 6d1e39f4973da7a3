"""The OpenAI-compatible API: /v1/models, /v1/chat/completions, /v1/completions, /v1/embeddings."""

from __future__ import annotations

import asyncio
import base64
import json
import math
import struct
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from llmkit import __version__
from llmkit.chat.tools import ToolCall
from llmkit.errors import InvalidParameterError, ModelNotFoundError
from llmkit.generation.logprobs import MAX_TOP_LOGPROBS, TokenLogprob
from llmkit.generation.loop import Usage
from llmkit.server import service
from llmkit.server.grammar import response_format_schema
from llmkit.server.schemas import ChatCompletionRequest, CompletionRequest, EmbeddingRequest
from llmkit.server.service import Choices, Error, Final, GenerationRequest, TextDelta, ToolCalls

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


def _chat_logprobs(body: ChatCompletionRequest) -> int | None:
    """How many alternatives per token the chat request asks for (None: no log-probabilities)."""
    if body.top_logprobs is not None and body.logprobs is not True:
        raise InvalidParameterError("top_logprobs needs logprobs: true.")
    if body.logprobs not in (None, False, True):
        raise InvalidParameterError("logprobs must be true or false for chat completions.")
    return (body.top_logprobs or 0) if body.logprobs else None


def _completion_logprobs(body: CompletionRequest) -> int | None:
    """The legacy completions' `logprobs`: the number of alternatives per token."""
    value = body.logprobs
    if value is None or value is False:
        return None
    if value is True or not 0 <= value <= MAX_TOP_LOGPROBS:
        raise InvalidParameterError(f"logprobs must be a number from 0 to {MAX_TOP_LOGPROBS}.")
    return value


def _legacy_logprobs(entries: list[TokenLogprob], offset: int) -> dict[str, Any]:
    """Log-probabilities in the completions endpoint's older shape."""
    offsets = []
    for entry in entries:
        offsets.append(offset)
        offset += len(entry.text)
    return {
        "tokens": [entry.text for entry in entries],
        # The prompt's first token has nothing before it: null, as OpenAI writes with echo.
        "token_logprobs": [None if math.isnan(e.logprob) else e.logprob for e in entries],
        "top_logprobs": [
            None if math.isnan(e.logprob) else {alt.text: alt.logprob for alt in e.top}
            for e in entries
        ],
        "text_offset": offsets,
    }


def _usage(usage: Usage) -> dict[str, int]:
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
    }


def _finish_reason(final: Final) -> str:
    # OpenAI has no word for a cancelled reply; nobody is left to read it anyway.
    return "stop" if final.finish_reason == "cancelled" else final.finish_reason


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


def _model_entry(name: str, manifest: Any) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": int(manifest.created), "owned_by": "llmkit"}


@router.get("/models")
async def list_models(request: Request) -> dict[str, Any]:
    # Every model a request may name: the served list, or the whole store when served on demand.
    listing = await asyncio.to_thread(request.app.state.llmkit.listing)
    return {"object": "list", "data": [_model_entry(name, manifest) for name, manifest in listing]}


@router.get("/models/{name}")
async def get_model(name: str, request: Request) -> dict[str, Any]:
    state = request.app.state.llmkit
    key = state.pool.key(name)  # an unknown name of a fixed list: 404
    for listed, manifest in await asyncio.to_thread(state.listing):
        if listed == key:
            return _model_entry(listed, manifest)
    raise ModelNotFoundError(f"The model '{name}' is not in the store.")


@router.post("/chat/completions")
async def chat_completions(body: ChatCompletionRequest, request: Request) -> Any:
    state = request.app.state.llmkit
    ask = GenerationRequest(
        body.model,
        _params(body, body.max_completion_tokens or body.max_tokens),
        messages=[m.model_dump(exclude_none=True) for m in body.messages],
        schema=response_format_schema(body.response_format),
        tools=body.tools,
        tool_choice=body.tool_choice,
        logprobs=_chat_logprobs(body),
    )
    run = await service.start_choices(state, ask, body.n)
    ident, created = f"chatcmpl-{uuid.uuid4().hex[:24]}", int(time.time())
    if body.stream:
        include_usage = bool((body.stream_options or {}).get("include_usage"))
        lines = _chat_stream(run, ident, created, include_usage)
        return service.stream(
            state, run, lines, "text/event-stream", headers={"Cache-Control": "no-cache"}
        )
    replies = await run.collect(request.is_disconnected)
    choices = []
    for index, reply in enumerate(replies):
        message: dict[str, Any] = {"role": "assistant", "content": reply.content}
        if reply.calls:
            message["tool_calls"] = _tool_calls_json(reply.calls)
        choices.append(
            {
                "index": index,
                "message": message,
                "logprobs": _content_logprobs(reply.final.logprobs),
                "finish_reason": _finish_reason(reply.final),
            }
        )
    return {
        "id": ident,
        "object": "chat.completion",
        "created": created,
        "model": run.model_name,
        "system_fingerprint": FINGERPRINT,
        "choices": choices,
        "usage": _usage(service.combined_usage([reply.final for reply in replies])),
    }


def _content_logprobs(entries: list[TokenLogprob] | None) -> dict[str, Any] | None:
    return None if entries is None else {"content": service.logprob_entries(entries)}


async def _chat_stream(
    run: Choices, ident: str, created: int, include_usage: bool
) -> AsyncIterator[bytes]:
    base = {
        "id": ident,
        "object": "chat.completion.chunk",
        "created": created,
        "model": run.model_name,
    }

    def chunk(
        index: int, delta: dict[str, Any], finish: str | None = None, logprobs: Any = None
    ) -> bytes:
        choice = {"index": index, "delta": delta, "logprobs": logprobs, "finish_reason": finish}
        return _sse({**base, "system_fingerprint": FINGERPRINT, "choices": [choice]})

    wanted = run.job.request.logprobs is not None
    for index in range(len(run.runs)):
        yield chunk(index, {"role": "assistant", "content": ""})
    finals: list[Final] = []
    async for index, event in run.events():
        if isinstance(event, TextDelta):
            logprobs = _content_logprobs(list(event.logprobs)) if wanted else None
            yield chunk(index, {"content": event.text}, logprobs=logprobs)
        elif isinstance(event, ToolCalls):
            calls = _tool_calls_json(event.calls)
            yield chunk(
                index, {"tool_calls": [{"index": i, **call} for i, call in enumerate(calls)]}
            )
            if event.content:
                yield chunk(index, {"content": event.content})
        elif isinstance(event, Final):
            yield chunk(index, {}, _finish_reason(event))
            finals.append(event)
        elif isinstance(event, Error):
            yield _sse(openai_error(500, event.message, kind="server_error"))
    if len(finals) == len(run.runs):  # every choice finished: the usage, then the end
        if include_usage:
            yield _sse({**base, "choices": [], "usage": _usage(service.combined_usage(finals))})
        yield _sse("[DONE]")


@router.post("/completions")
async def completions(body: CompletionRequest, request: Request) -> Any:
    state = request.app.state.llmkit
    prompts = [body.prompt] if isinstance(body.prompt, str) else body.prompt
    if len(prompts) != 1:
        raise InvalidParameterError(
            "Send one prompt per request (a list of exactly one is accepted)."
        )
    alternatives = _completion_logprobs(body)
    # OpenAI's default for this endpoint is 16 tokens.
    ask = GenerationRequest(
        body.model,
        _params(body, body.max_tokens or 16),
        prompt=prompts[0],
        logprobs=alternatives,
        # With echo, the prompt's own tokens are scored too: how evaluation harnesses score
        # answers. They are known once the prompt is read, so this needs a whole reply.
        prompt_logprobs=body.echo and alternatives is not None,
    )
    if ask.prompt_logprobs and body.stream:
        raise InvalidParameterError("echo with logprobs needs stream: false.")
    run = await service.start_choices(state, ask, body.n)
    ident, created = f"cmpl-{uuid.uuid4().hex[:24]}", int(time.time())
    echo = prompts[0] if body.echo else ""
    base = {"id": ident, "object": "text_completion", "created": created, "model": run.model_name}

    wanted = ask.logprobs is not None

    def choice(
        index: int,
        text: str,
        finish: str | None,
        entries: list[TokenLogprob] | None = None,
        offset: int = 0,
    ) -> dict[str, Any]:
        logprobs = _legacy_logprobs(entries or [], offset) if wanted else None
        return {"text": text, "index": index, "logprobs": logprobs, "finish_reason": finish}

    if body.stream:
        include_usage = bool((body.stream_options or {}).get("include_usage"))

        async def events() -> AsyncIterator[bytes]:
            count = len(run.runs)
            if echo:
                for index in range(count):
                    yield _sse({**base, "choices": [choice(index, echo, None)]})
            offsets = [0] * count
            finals: list[Final] = []
            async for index, event in run.events():
                if isinstance(event, TextDelta):
                    entries = list(event.logprobs)
                    piece = choice(index, event.text, None, entries, offsets[index])
                    yield _sse({**base, "choices": [piece]})
                    offsets[index] += len(event.text)
                elif isinstance(event, Final):
                    yield _sse({**base, "choices": [choice(index, "", _finish_reason(event))]})
                    finals.append(event)
                elif isinstance(event, Error):
                    yield _sse(openai_error(500, event.message, kind="server_error"))
            if len(finals) == count:  # every choice finished: the usage, then the end
                if include_usage:
                    usage = _usage(service.combined_usage(finals))
                    yield _sse({**base, "choices": [], "usage": usage})
                yield _sse("[DONE]")

        return service.stream(
            state, run, events(), "text/event-stream", headers={"Cache-Control": "no-cache"}
        )
    replies = await run.collect(request.is_disconnected)
    return {
        **base,
        "system_fingerprint": FINGERPRINT,
        "choices": [
            choice(
                index,
                echo + (reply.content or ""),
                _finish_reason(reply.final),
                [*(reply.final.prompt_logprobs or []), *(reply.final.logprobs or [])],
            )
            for index, reply in enumerate(replies)
        ],
        "usage": _usage(service.combined_usage([reply.final for reply in replies])),
    }


@router.post("/embeddings")
async def embeddings(body: EmbeddingRequest, request: Request) -> Any:
    if body.encoding_format not in (None, "float", "base64"):
        raise InvalidParameterError("encoding_format must be 'float' or 'base64'.")
    result = await service.embed(request.app.state.llmkit, body.model, body.input)
    data = []
    for index, vector in enumerate(result.vectors):
        embedding: list[float] | str = vector
        if body.encoding_format == "base64":  # little-endian float32, as OpenAI sends it
            embedding = base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
        data.append({"object": "embedding", "index": index, "embedding": embedding})
    return JSONResponse(
        {
            "object": "list",
            "data": data,
            "model": result.model_name,
            "usage": {"prompt_tokens": result.tokens, "total_tokens": result.tokens},
        }
    )
