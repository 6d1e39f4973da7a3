"""The Ollama-compatible API: /api/chat, /api/generate, /api/tags, /api/show, /api/ps, /api/embed."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from datetime import datetime, timezone
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse

from llmkit import __version__
from llmkit.errors import InvalidParameterError, LlmkitError
from llmkit.generation.loop import GenerationResult
from llmkit.server.grammar import ollama_format_schema
from llmkit.server.schemas import (
    OllamaChatRequest,
    OllamaEmbedRequest,
    OllamaGenerateRequest,
    OllamaShowRequest,
)
from llmkit.server.service import (
    Job,
    ToolCallHold,
    chat_job,
    collect,
    completion_job,
    stream_chunks,
    submit,
)
from llmkit.server.state import ServedModel
from llmkit.server.tools import parse_tool_calls

router = APIRouter(prefix="/api")

# Ollama option name -> SamplingParams name. Options with no meaning here (num_ctx, num_thread,
# mirostat, ...) are accepted and ignored, as Ollama itself ignores what a runner does not use.
_OPTIONS = {
    "temperature": "temperature",
    "top_k": "top_k",
    "top_p": "top_p",
    "min_p": "min_p",
    "seed": "seed",
    "stop": "stop",
    "repeat_penalty": "repeat_penalty",
    "repeat_last_n": "repeat_last_n",
    "presence_penalty": "presence_penalty",
    "frequency_penalty": "frequency_penalty",
    "num_predict": "max_tokens",
}


_INTEGER_OPTIONS = {"top_k", "seed", "repeat_last_n", "num_predict"}


def _params(options: dict[str, Any] | None) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for key, value in (options or {}).items():
        if key not in _OPTIONS or value is None:
            continue
        if key == "stop":
            stops = [value] if isinstance(value, str) else value
            if not isinstance(stops, list) or not all(isinstance(item, str) for item in stops):
                raise InvalidParameterError("options.stop must be a string or a list of strings.")
            value = stops
        else:
            kind = int if key in _INTEGER_OPTIONS else float
            if (
                isinstance(value, bool)
                or not isinstance(value, (int, float))
                or (kind is int and value != int(value))
            ):
                raise InvalidParameterError(
                    f"options.{key} must be {'an integer' if kind is int else 'a number'}."
                )
            value = kind(value)
        params[_OPTIONS[key]] = value
    if params.get("max_tokens") is not None and params["max_tokens"] < 0:
        params["max_tokens"] = None  # -1 (and -2): until a stop or the context is full
    return params


def _now() -> str:
    return datetime.now(timezone.utc).isoformat().replace("+00:00", "Z")


def _ns(seconds: float) -> int:
    return int(seconds * 1e9)


def _stats(result: GenerationResult, started: float) -> dict[str, Any]:
    timing, usage = result.timing, result.usage
    return {
        "done_reason": "length" if result.finish_reason == "length" else "stop",
        "total_duration": _ns(time.perf_counter() - started),
        "load_duration": 0,
        "prompt_eval_count": usage.prompt_tokens,
        "prompt_eval_duration": _ns(timing.prompt_seconds),
        "eval_count": usage.completion_tokens,
        "eval_duration": _ns(timing.generation_seconds),
    }


def _details(served: ServedModel) -> dict[str, Any]:
    info = served.model.manifest.info
    parameters = info.get("parameters") or 0
    size = f"{parameters / 1e9:.1f}B" if parameters >= 1e9 else f"{parameters / 1e6:.0f}M"
    family = info.get("architecture") or ""
    return {
        "parent_model": "",
        "format": served.model.manifest.format,
        "family": family,
        "families": [family] if family else None,
        "parameter_size": size,
        "quantization_level": info.get("quantization") or "",
    }


def _entry(served: ServedModel) -> dict[str, Any]:
    manifest = served.model.manifest
    return {
        "name": served.name,
        "model": served.name,
        "modified_at": datetime.fromtimestamp(manifest.created, timezone.utc).isoformat(),
        "size": manifest.size_bytes,
        "digest": manifest.sha256,
        "details": _details(served),
    }


def _ndjson(data: dict[str, Any]) -> bytes:
    return (json.dumps(data) + "\n").encode()


@router.get("/version")
async def version() -> dict[str, str]:
    return {"version": __version__}


@router.get("/tags")
async def tags(request: Request) -> dict[str, Any]:
    return {"models": [_entry(served) for served in request.app.state.llmkit.models.values()]}


@router.get("/ps")
async def running(request: Request) -> dict[str, Any]:
    return {
        "models": [
            {
                **_entry(served),
                "expires_at": "0001-01-01T00:00:00Z",
                "size_vram": 0,
                "context_length": served.scheduler.slot_context,
            }
            for served in request.app.state.llmkit.models.values()
        ]
    }


@router.post("/show")
async def show(body: OllamaShowRequest, request: Request) -> dict[str, Any]:
    served = request.app.state.llmkit.get(body.model or body.name or "")
    model = served.model
    info = {
        key: value
        for key, value in model.manifest.info.items()
        if key not in ("chat_template", "special_tokens", "tokenizer")
    }
    template = model.template.text if model.template else ""
    parameters = "\n".join(
        f"{key} {value}" for key, value in (model.manifest.parameters or {}).items()
    )
    capabilities = ["completion", *(["tools"] if model.template else []), "embedding"]
    return {
        "modelfile": f"FROM {model.manifest.path}\n",
        "parameters": parameters,
        "template": template,
        "system": model.system_prompt or "",
        "details": _details(served),
        "model_info": info,
        "capabilities": capabilities,
        "modified_at": _entry(served)["modified_at"],
    }


@router.post("/chat")
async def chat(body: OllamaChatRequest, request: Request) -> Any:
    state = request.app.state.llmkit
    if any(message.images for message in body.messages):
        raise InvalidParameterError("Images are not supported by the served models.")
    messages = []
    for message in body.messages:
        data = message.model_dump(exclude_none=True, exclude={"images", "tool_name"})
        messages.append(data)
    started = time.perf_counter()
    job = chat_job(
        state,
        body.model,
        messages,
        _params(body.options),
        schema=ollama_format_schema(body.format),
        tools=body.tools,
        tool_choice="auto" if body.tools else None,
    )
    if not body.messages:
        # Ollama answers an empty conversation by loading the model and saying it is ready.
        return {
            "model": job.served.name,
            "created_at": _now(),
            "message": {"role": "assistant", "content": ""},
            "done": True,
            "done_reason": "load",
        }
    handle = submit(job)
    if body.stream:
        return StreamingResponse(
            _chat_stream(job, handle, started), media_type="application/x-ndjson"
        )
    result = await collect(handle, request)
    return {
        "model": job.served.name,
        "created_at": _now(),
        "message": _reply(job, result.text),
        "done": True,
        **_stats(result, started),
    }


def _reply(job: Job, text: str) -> dict[str, Any]:
    if job.tool_plan is None:
        return {"role": "assistant", "content": text}
    content, calls = parse_tool_calls(text)
    message: dict[str, Any] = {"role": "assistant", "content": content or ""}
    if calls:
        message["tool_calls"] = [
            {"function": {"name": call.name, "arguments": call.arguments}} for call in calls
        ]
    return message


async def _chat_stream(job: Job, handle: Any, started: float) -> AsyncIterator[bytes]:
    name = job.served.name
    hold = ToolCallHold(job.tool_plan is not None)
    try:
        async for piece in stream_chunks(handle):
            text = hold.release(piece.text)
            if text:
                yield _ndjson(
                    {
                        "model": name,
                        "created_at": _now(),
                        "message": {"role": "assistant", "content": text},
                        "done": False,
                    }
                )
    except LlmkitError as error:
        yield _ndjson({"error": str(error)})
        return
    except asyncio.CancelledError:
        raise
    call_text = hold.call_text
    message = _reply(job, call_text) if call_text else {"role": "assistant", "content": ""}
    yield _ndjson(
        {
            "model": name,
            "created_at": _now(),
            "message": message,
            "done": True,
            **_stats(handle.result, started),
        }
    )


@router.post("/generate")
async def generate(body: OllamaGenerateRequest, request: Request) -> Any:
    state = request.app.state.llmkit
    if body.images:
        raise InvalidParameterError("Images are not supported by the served models.")
    started = time.perf_counter()
    schema = ollama_format_schema(body.format)
    if not body.prompt:
        served = state.get(body.model)
        return {
            "model": served.name,
            "created_at": _now(),
            "response": "",
            "done": True,
            "done_reason": "load",
        }
    if body.raw:
        job = completion_job(state, body.model, body.prompt, _params(body.options), schema=schema)
    else:
        messages = [{"role": "system", "content": body.system}] if body.system else []
        messages.append({"role": "user", "content": body.prompt})
        job = chat_job(state, body.model, messages, _params(body.options), schema=schema)
    handle = submit(job)
    name = job.served.name
    if body.stream:

        async def lines() -> AsyncIterator[bytes]:
            try:
                async for piece in stream_chunks(handle):
                    if piece.text:
                        yield _ndjson(
                            {
                                "model": name,
                                "created_at": _now(),
                                "response": piece.text,
                                "done": False,
                            }
                        )
            except LlmkitError as error:
                yield _ndjson({"error": str(error)})
                return
            yield _ndjson(
                {
                    "model": name,
                    "created_at": _now(),
                    "response": "",
                    "done": True,
                    **_stats(handle.result, started),
                }
            )

        return StreamingResponse(lines(), media_type="application/x-ndjson")
    result = await collect(handle, request)
    return {
        "model": name,
        "created_at": _now(),
        "response": result.text,
        "done": True,
        **_stats(result, started),
    }


@router.post("/embed")
async def embed(body: OllamaEmbedRequest, request: Request) -> Any:
    served = request.app.state.llmkit.get(body.model)
    inputs = [body.input] if isinstance(body.input, str) else body.input
    if not inputs:
        raise InvalidParameterError("input must be a string or a non-empty list of strings.")
    started = time.perf_counter()
    embedder = await asyncio.to_thread(lambda: served.embedder)
    vectors, tokens = [], 0
    for text in inputs:
        vector, count = await asyncio.to_thread(embedder.embed, text)
        vectors.append(vector)
        tokens += count
    return {
        "model": served.name,
        "embeddings": vectors,
        "total_duration": _ns(time.perf_counter() - started),
        "load_duration": 0,
        "prompt_eval_count": tokens,
    }
