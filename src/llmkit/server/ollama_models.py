"""Ollama's model-management API over the store: /api/create, /api/copy, /api/delete, /api/pull.

Recipes made here are the same as `llmkit create` makes (store/recipes.py). A model name from a
request is only ever a store name: `from` may not be a path, so no request reaches a file. A pull
fetches a built-in model or a hub file as `llmkit pull` does, streaming Ollama's progress lines.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import StrictBool

from llmkit.errors import InvalidParameterError, LlmkitError, ModelNotFoundError
from llmkit.server.schemas import (
    OllamaCopyRequest,
    OllamaCreateRequest,
    OllamaDeleteRequest,
    _Lenient,
)
from llmkit.store.paths import validate_model_name

router = APIRouter(prefix="/api")


def _store() -> Any:
    from llmkit.store.store import ModelStore

    return ModelStore()


@router.post("/create")
async def create(body: OllamaCreateRequest, request: Request) -> Any:
    from llmkit.store.recipes import make_recipe

    if body.files or body.adapters:
        raise InvalidParameterError(
            "Uploading weights or adapters is not supported; import them with `llmkit import` "
            "and name them in 'from'."
        )
    if body.quantize:
        raise InvalidParameterError("Quantizing here is not supported; use `llmkit quantize`.")
    if not body.from_:
        raise InvalidParameterError("'from' must name the base model of the recipe.")
    validate_model_name(body.model)
    validate_model_name(body.from_)  # a store name, never a path
    license = "\n".join(body.license) if isinstance(body.license, list) else body.license
    recipe = make_recipe(
        body.from_,
        options=body.parameters,
        system=body.system,
        template=body.template,
        messages=[m.model_dump() for m in body.messages or []],
        license=license,
    )
    await asyncio.to_thread(_store().create_recipe, body.model, recipe, force=True)
    if not body.stream:
        return {"status": "success"}

    async def lines() -> AsyncIterator[bytes]:
        for status in ("reading model metadata", "creating recipe", "writing manifest", "success"):
            yield (json.dumps({"status": status}) + "\n").encode()

    return StreamingResponse(lines(), media_type="application/x-ndjson")


@router.post("/copy")
async def copy(body: OllamaCopyRequest) -> Response:
    validate_model_name(body.destination)
    await asyncio.to_thread(_store().copy, body.source, body.destination, force=True)
    return Response(status_code=200)


@router.delete("/delete")
async def delete(body: OllamaDeleteRequest, request: Request) -> Response:
    name = body.model or body.name or ""
    validate_model_name(name)
    state = request.app.state.llmkit
    if not state.on_demand:
        served = state.pool.names or []
        if name in served or name.removesuffix(":latest") in served:
            raise InvalidParameterError(f"'{name}' is being served; stop the server to remove it.")
    store = _store()
    if name not in await asyncio.to_thread(store.names):
        raise ModelNotFoundError(f"model '{name}' not found")
    # Served on demand: unloaded first, unless requests are using it now.
    if await asyncio.to_thread(state.pool.unload, name) == "unloading":
        raise InvalidParameterError(
            f"'{name}' is answering requests; it unloads once they finish, then delete it."
        )
    await asyncio.to_thread(store.remove, name)
    return Response(status_code=200)


# ---- /api/pull -------------------------------------------------------------------------------
class OllamaPullRequest(_Lenient):
    model: str | None = None
    name: str | None = None  # older clients send "name"
    stream: StrictBool = True
    insecure: StrictBool = False


FIRST_NEWS_SECONDS = 2.0  # how long a pull may fail with a status code before it streams


@dataclass(frozen=True)
class Pull:
    """What a pull fetches: a built-in model, or a GGUF file of a hub repository."""

    label: str
    builtin: str | None = None
    repo: str | None = None
    quant: str | None = None


def pull_target(name: str) -> Pull:
    """A built-in NAME, or hf.co/OWNER/REPO[:QUANT] as in Ollama (hf:OWNER/REPO too); else 404."""
    from llmkit.store.catalog import BUILTIN_MODELS
    from llmkit.store.hub import parse_hub_source

    base = name.removesuffix(":latest")
    if base in BUILTIN_MODELS:
        return Pull(base, builtin=base)
    hub = parse_hub_source(name)  # a malformed OWNER/REPO or :QUANT: 400
    if hub is None:
        raise ModelNotFoundError(
            f"pull model manifest: '{name}' is not a built-in model ({', '.join(BUILTIN_MODELS)}) "
            "nor a hub repository written hf.co/OWNER/REPO[:QUANT]."
        )
    return Pull(hub[0], repo=hub[0], quant=hub[1])


def run_pull(target: Pull, progress: Callable[[int, int], None]) -> Any:
    """Fetch and register the model (blocking); returns its manifest."""
    from llmkit.store.catalog import BUILTIN_MODELS
    from llmkit.store.hub import (
        choose_gguf,
        list_gguf_files,
        pull_builtin,
        pull_from_hub,
        store_name_for,
    )

    store = _store()
    if target.builtin is not None:
        builtin = BUILTIN_MODELS[target.builtin]
        if builtin.locate() is not None and not builtin.part_modules:
            return store.ensure_builtin(target.builtin, progress=progress)  # hashed with progress
        return pull_builtin(target.builtin, store=store)
    assert target.repo is not None
    # The file is chosen as `llmkit pull hf:OWNER/REPO[:QUANT]` chooses it, and stored under
    # the same name (REPO:QUANT, or the file's name).
    chosen = choose_gguf(target.repo, list_gguf_files(target.repo), target.quant)
    stored = store_name_for(target.repo, chosen.path)
    if store.has(stored):
        return store.get(stored)  # pulled before: as in Ollama, pulling a local model succeeds
    return pull_from_hub(target.repo, chosen.path, name=stored, store=store, progress=progress)


def _pull_failure(error: LlmkitError) -> LlmkitError | JSONResponse:
    """The caller's mistakes keep their status; a hub that fails is the server's upstream: 502."""
    if isinstance(error, (ModelNotFoundError, InvalidParameterError)):
        return error
    return JSONResponse({"error": str(error)}, 502)


@router.post("/pull")
async def pull(body: OllamaPullRequest) -> Any:
    target = pull_target(body.model or body.name or "")
    loop = asyncio.get_running_loop()
    news: asyncio.Queue[tuple[int, int]] = asyncio.Queue()

    def progress(done: int, total: int) -> None:
        loop.call_soon_threadsafe(news.put_nowait, (done, total))

    task = asyncio.ensure_future(asyncio.to_thread(run_pull, target, progress))
    # A failure that comes at once (an unreachable hub, a missing file) gets a status code;
    # one that comes later ends the stream with an error line.
    first = asyncio.ensure_future(news.get())
    await asyncio.wait({task, first}, timeout=FIRST_NEWS_SECONDS, return_when="FIRST_COMPLETED")
    if task.done() and task.exception() is not None:
        first.cancel()
        failure = _pull_failure(task.exception())  # type: ignore[arg-type]
        if isinstance(failure, JSONResponse):
            return failure
        raise failure
    if not body.stream:
        first.cancel()
        try:
            await task
        except LlmkitError as error:
            failure = _pull_failure(error)
            if isinstance(failure, JSONResponse):
                return failure
            raise failure from None
        return {"status": "success"}

    def line(data: dict[str, Any]) -> bytes:
        return (json.dumps(data) + "\n").encode()

    async def lines() -> AsyncIterator[bytes]:
        yield line({"status": "pulling manifest"})
        status = f"pulling {target.label}"
        waiting: asyncio.Future[Any] = first
        while True:
            await asyncio.wait({task, waiting}, return_when="FIRST_COMPLETED")
            if waiting.done():
                done, total = waiting.result()
                yield line({"status": status, "total": total, "completed": done})
                waiting = asyncio.ensure_future(news.get())
                continue
            break
        waiting.cancel()
        try:
            manifest = task.result()
        except LlmkitError as error:
            yield line({"error": str(error)})
            return
        digest = f"sha256:{manifest.sha256}"
        size = manifest.size_bytes
        yield line({"status": status, "digest": digest, "total": size, "completed": size})
        for status in ("verifying sha256 digest", "writing manifest", "success"):
            yield line({"status": status})

    return StreamingResponse(lines(), media_type="application/x-ndjson")
