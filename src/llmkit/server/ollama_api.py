"""The Ollama-compatible API: /api/chat, /api/generate, /api/tags, /api/show, /api/ps, /api/embed.

A request's `keep_alive` is read by the server's middleware for every API (server/model_pool.py);
an empty /api/generate or /api/chat loads the model, or with keep_alive 0 unloads it.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from datetime import datetime, timedelta, timezone
from typing import Any

from fastapi import APIRouter, Request

from llmkit import __version__
from llmkit.chat.tools import ToolCall
from llmkit.errors import InvalidParameterError
from llmkit.params import params_from_ollama
from llmkit.server import service
from llmkit.server.grammar import ollama_format_schema
from llmkit.server.model_pool import FOREVER, current_scope
from llmkit.server.schemas import (
    OllamaChatRequest,
    OllamaEmbedRequest,
    OllamaGenerateRequest,
    OllamaShowRequest,
)
from llmkit.server.service import Error, Final, GenerationRequest, Run, TextDelta, ToolCalls

router = APIRouter(prefix="/api")


def _now() -> str:
    return datetime.now(timezone.utc).isoformat().replace("+00:00", "Z")


def _ns(seconds: float) -> int:
    return int(seconds * 1e9)


def _stats(final: Final, started: float) -> dict[str, Any]:
    timing, usage = final.timing, final.usage
    return {
        # Ollama says "stop" for a reply that ended in tool calls, and has no "cancelled".
        "done_reason": "length" if final.finish_reason == "length" else "stop",
        "total_duration": _ns(time.perf_counter() - started),
        "load_duration": 0,
        "prompt_eval_count": usage.prompt_tokens,
        "prompt_eval_duration": _ns(timing.prompt_seconds),
        "eval_count": usage.completion_tokens,
        "eval_duration": _ns(timing.generation_seconds),
    }


def _details(manifest: Any) -> dict[str, Any]:
    info = manifest.info
    parameters = info.parameters or 0
    size = f"{parameters / 1e9:.1f}B" if parameters >= 1e9 else f"{parameters / 1e6:.0f}M"
    family = info.architecture or ""
    return {
        "parent_model": "",
        "format": manifest.format,
        "family": family,
        "families": [family] if family else None,
        "parameter_size": size,
        "quantization_level": info.quantization or "",
    }


def _entry(name: str, manifest: Any) -> dict[str, Any]:
    return {
        "name": name,
        "model": name,
        "modified_at": datetime.fromtimestamp(manifest.created, timezone.utc).isoformat(),
        "size": manifest.size_bytes,
        "digest": manifest.sha256,
        "details": _details(manifest),
    }


def _expires_at(seconds: float) -> str:
    if seconds == FOREVER:
        return "9999-12-31T23:59:59Z"  # a pinned model, or keep_alive < 0: it does not expire
    return (
        (datetime.now(timezone.utc) + timedelta(seconds=seconds)).isoformat().replace("+00:00", "Z")
    )


async def _unload_or_load(state: Any, model: str) -> tuple[str, str]:
    """Ollama's empty request: keep_alive 0 unloads the model, anything else loads it."""
    scope = current_scope()
    if scope is not None and scope.keep_alive == 0:
        key = state.pool.key(model)  # a fixed list's unknown name: 404
        if await asyncio.to_thread(state.pool.unload, key) == "pinned":
            raise InvalidParameterError(
                f"'{key}' was named when the server started and stays loaded while it runs."
            )
        return key, "unload"
    return (await asyncio.to_thread(state.get, model)).name, "load"


def _ndjson(data: dict[str, Any]) -> bytes:
    return (json.dumps(data) + "\n").encode()


@router.get("/version")
async def version() -> dict[str, str]:
    return {"version": __version__}


@router.get("/tags")
async def tags(request: Request) -> dict[str, Any]:
    listing = await asyncio.to_thread(request.app.state.llmkit.listing)
    return {"models": [_entry(name, manifest) for name, manifest in listing]}


@router.get("/ps")
async def running(request: Request) -> dict[str, Any]:
    return {
        "models": [
            {
                **_entry(loaded.name, loaded.served.model.manifest),
                "size": loaded.size,  # the planner's estimate of its memory
                "size_vram": 0,
                "expires_at": _expires_at(loaded.expires_in),
                "context_length": loaded.served.scheduler.slot_context,
            }
            for loaded in request.app.state.llmkit.pool.loaded()
        ]
    }


@router.post("/show")
async def show(body: OllamaShowRequest, request: Request) -> dict[str, Any]:
    # From the store: a model that is not loaded stays so (listing clients ask for each one).
    name, manifest, prompt_format = await asyncio.to_thread(
        request.app.state.llmkit.describe, body.model or body.name or ""
    )
    info = {
        key: value
        for key, value in manifest.info.to_dict().items()
        if key not in ("chat_template", "special_tokens", "tokenizer")
    }
    parameters = "\n".join(f"{key} {value}" for key, value in (manifest.parameters or {}).items())
    # "tools" only where the template itself renders them (other models get them by a grammar).
    # Rendering runs the model's template, which is never done on the event loop.
    syntax = await asyncio.to_thread(lambda: prompt_format.tool_syntax)
    tools = ["tools"] if syntax.native else []
    return {
        "modelfile": f"FROM {manifest.path}\n",
        "parameters": parameters,
        "template": prompt_format.template or "",
        "system": manifest.system_prompt or "",
        "details": _details(manifest),
        "model_info": info,
        "capabilities": ["completion", *tools, "embedding"],
        "modified_at": _entry(name, manifest)["modified_at"],
    }


@router.post("/chat")
async def chat(body: OllamaChatRequest, request: Request) -> Any:
    state = request.app.state.llmkit
    if any(message.images for message in body.messages):
        raise InvalidParameterError("Images are not supported by the served models.")
    started = time.perf_counter()
    if not body.messages:
        # Ollama answers an empty conversation by loading the model and saying it is ready
        # (or, with keep_alive 0, by unloading it).
        name, reason = await _unload_or_load(state, body.model)
        return {
            "model": name,
            "created_at": _now(),
            "message": {"role": "assistant", "content": ""},
            "done": True,
            "done_reason": reason,
        }
    messages = [
        message.model_dump(exclude_none=True, exclude={"images", "tool_name"})
        for message in body.messages
    ]
    ask = GenerationRequest(
        body.model,
        params_from_ollama(body.options),
        messages=messages,
        schema=ollama_format_schema(body.format),
        tools=body.tools,
        tool_choice="auto" if body.tools else None,
        logprobs=_logprobs(body),
    )
    run = await service.start(state, ask)
    if body.stream:
        return service.stream(state, run, _chat_stream(run, started), "application/x-ndjson")
    reply = await run.collect(request.is_disconnected)
    return {
        "model": run.model_name,
        "created_at": _now(),
        "message": _message(reply.content or "", reply.calls),
        "done": True,
        **_logprobs_field(reply.final.logprobs),
        **_stats(reply.final, started),
    }


def _logprobs(body: OllamaChatRequest | OllamaGenerateRequest) -> int | None:
    """How many alternatives per token the request asks for (None: no log-probabilities)."""
    if body.top_logprobs is not None and not body.logprobs:
        raise InvalidParameterError("top_logprobs needs logprobs: true.")
    return (body.top_logprobs or 0) if body.logprobs else None


def _logprobs_field(entries: Any) -> dict[str, Any]:
    return {} if entries is None else {"logprobs": service.logprob_entries(entries)}


def _message(content: str, calls: list[ToolCall]) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if calls:
        message["tool_calls"] = [
            {"function": {"name": call.name, "arguments": call.arguments}} for call in calls
        ]
    return message


async def _chat_stream(run: Run, started: float) -> AsyncIterator[bytes]:
    name = run.model_name
    calls: list[ToolCall] = []
    content = ""
    wanted = run.job.request.logprobs is not None
    async for event in run.events():
        if isinstance(event, TextDelta):
            yield _ndjson(
                {
                    "model": name,
                    "created_at": _now(),
                    "message": {"role": "assistant", "content": event.text},
                    "done": False,
                    **(_logprobs_field(event.logprobs) if wanted else {}),
                }
            )
        elif isinstance(event, ToolCalls):
            calls, content = event.calls, event.content  # sent with the last line, as Ollama does
        elif isinstance(event, Final):
            yield _ndjson(
                {
                    "model": name,
                    "created_at": _now(),
                    "message": _message(content, calls),
                    "done": True,
                    **_stats(event, started),
                }
            )
        elif isinstance(event, Error):
            yield _ndjson({"error": event.message})


@router.post("/generate")
async def generate(body: OllamaGenerateRequest, request: Request) -> Any:
    state = request.app.state.llmkit
    if body.images:
        raise InvalidParameterError("Images are not supported by the served models.")
    started = time.perf_counter()
    schema = ollama_format_schema(body.format)
    if not body.prompt:
        name, reason = await _unload_or_load(state, body.model)
        return {
            "model": name,
            "created_at": _now(),
            "response": "",
            "done": True,
            "done_reason": reason,
        }
    logprobs = _logprobs(body)
    if body.raw:
        ask = GenerationRequest(
            body.model,
            params_from_ollama(body.options),
            prompt=body.prompt,
            schema=schema,
            logprobs=logprobs,
        )
    else:
        messages = [{"role": "system", "content": body.system}] if body.system else []
        messages.append({"role": "user", "content": body.prompt})
        ask = GenerationRequest(
            body.model,
            params_from_ollama(body.options),
            messages=messages,
            schema=schema,
            logprobs=logprobs,
        )
    run = await service.start(state, ask)
    name = run.model_name
    wanted = logprobs is not None
    if body.stream:

        async def lines() -> AsyncIterator[bytes]:
            async for event in run.events():
                if isinstance(event, TextDelta):
                    yield _ndjson(
                        {
                            "model": name,
                            "created_at": _now(),
                            "response": event.text,
                            "done": False,
                            **(_logprobs_field(event.logprobs) if wanted else {}),
                        }
                    )
                elif isinstance(event, Final):
                    yield _ndjson(
                        {
                            "model": name,
                            "created_at": _now(),
                            "response": "",
                            "done": True,
                            **_stats(event, started),
                        }
                    )
                elif isinstance(event, Error):
                    yield _ndjson({"error": event.message})

        return service.stream(state, run, lines(), "application/x-ndjson")
    reply = await run.collect(request.is_disconnected)
    return {
        "model": name,
        "created_at": _now(),
        "response": reply.content or "",
        "done": True,
        **_logprobs_field(reply.final.logprobs),
        **_stats(reply.final, started),
    }


@router.post("/embed")
async def embed(body: OllamaEmbedRequest, request: Request) -> Any:
    started = time.perf_counter()
    result = await service.embed(request.app.state.llmkit, body.model, body.input)
    return {
        "model": result.model_name,
        "embeddings": result.vectors,
        "total_duration": _ns(time.perf_counter() - started),
        "load_duration": 0,
        "prompt_eval_count": result.tokens,
    }
