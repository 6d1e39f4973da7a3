"""Ollama's model-management API over the store: /api/create, /api/copy, /api/delete.

Recipes made here are the same as `llmkit create` makes (store/recipes.py). A model name from a
request is only ever a store name: `from` may not be a path, so no request reaches a file.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response, StreamingResponse

from llmkit.errors import InvalidParameterError
from llmkit.server.schemas import OllamaCopyRequest, OllamaCreateRequest, OllamaDeleteRequest
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
    served = request.app.state.llmkit.models
    if name in served or name.removesuffix(":latest") in served:
        raise InvalidParameterError(f"'{name}' is being served; stop the server to remove it.")
    store = _store()
    if name not in await asyncio.to_thread(store.names):
        from llmkit.errors import ModelNotFoundError

        raise ModelNotFoundError(f"model '{name}' not found")
    await asyncio.to_thread(store.remove, name)
    return Response(status_code=200)
