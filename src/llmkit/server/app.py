"""The FastAPI application: routes, the API-key and body-size guards, error shapes, health, metrics.

`create_app(state)` builds it around loaded models; `run_server()` loads models and serves them.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hmac
import json
import logging
import socket
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from importlib import resources
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from llmkit import __version__
from llmkit.errors import (
    ContextOverflowError,
    InvalidParameterError,
    LlmkitError,
    ModelNotFoundError,
)
from llmkit.generation.batching import QueueFullError, SchedulerClosedError
from llmkit.server.control import check_port
from llmkit.server.metrics import render_metrics
from llmkit.server.model_pool import ModelBusyError, ModelTooLargeError, parse_keep_alive
from llmkit.server.security import SecurityMiddleware, check_json_body, needs_json_check
from llmkit.server.state import ServerSettings, ServerState, load_state

log = logging.getLogger("llmkit.server")
PUBLIC_PATHS = ("/health",)
PAGE_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
# The chat page itself holds no data; it asks for the key before calling the API.
STATIC_PATHS = ("/", "/web/app.js", "/web/style.css", "/favicon.ico")


def _is_ollama(path: str) -> bool:
    return path.startswith("/api/")


def error_body(path: str, status: int, message: str, code: str | None = None) -> dict[str, Any]:
    if _is_ollama(path):
        return {"error": message}
    if path == "/v1/messages":  # Anthropic's shape
        kinds = {401: "authentication_error", 403: "permission_error", 404: "not_found_error"}
        kind = kinds.get(status, "overloaded_error" if status == 503 else "invalid_request_error")
        return {
            "type": "error",
            "error": {
                "type": kind if status < 500 or status == 503 else "api_error",
                "message": message,
            },
        }
    kind = {
        401: "authentication_error",
        403: "permission_error",
        404: "not_found_error",
        413: "invalid_request_error",
        503: "server_overloaded",
    }.get(status, "invalid_request_error" if status < 500 else "server_error")
    return {"error": {"message": message, "type": kind, "param": None, "code": code or str(status)}}


def _status_for(error: LlmkitError) -> int:
    if isinstance(error, ModelNotFoundError):
        return 404
    if isinstance(error, (QueueFullError, SchedulerClosedError, ModelBusyError)):
        return 503
    if isinstance(error, ModelTooLargeError):
        return 507  # Insufficient Storage: the server's memory, not the request, is short
    return 400  # invalid parameters, context overflow, templates: all the caller's to fix


def _keep_alive_of(body: bytes) -> float | None:
    """A request's keep_alive (Ollama's field; an extra field in any other API), in seconds."""
    if b'"keep_alive"' not in body:  # most requests: no parsing
        return None
    try:
        data = json.loads(body)
    except ValueError:
        return None  # the route refuses the body in its own words
    if not isinstance(data, dict) or data.get("keep_alive") is None:
        return None
    return parse_keep_alive(data["keep_alive"])


def _route_label(path: str, known: frozenset[str]) -> str:
    # Only the server's own paths become labels in /metrics; any other path a client sends is
    # "other", so a crafted one (quotes, newlines, a new label per request) can neither break
    # the exposition nor grow it.
    if path in known:
        return path
    if path.startswith("/v1/models/"):
        return "/v1/models/{name}"
    return "other"


def _route_paths(routes: Iterable[Any]) -> Iterator[str]:
    # FastAPI keeps an included router as one entry that holds the router's own routes (none of
    # these routers has a prefix), so the paths are read from inside it.
    for route in routes:
        if isinstance(getattr(route, "path", None), str):
            yield route.path
        elif (included := getattr(route, "original_router", None)) is not None:
            yield from _route_paths(included.routes)


class GuardMiddleware:
    """API key, body-size limit and request counting, on the raw ASGI messages (cheap, stream-safe)."""

    def __init__(self, app: ASGIApp, state: ServerState, paths: frozenset[str]) -> None:
        self.app, self.state, self.paths = app, state, paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        settings = self.state.settings
        status_seen = 0

        async def counting_send(message: Message) -> None:
            nonlocal status_seen
            if message["type"] == "http.response.start":
                status_seen = message["status"]
            await send(message)

        try:
            key = settings.api_key
            if key and path not in PUBLIC_PATHS and path not in STATIC_PATHS:
                headers = dict(scope["headers"])
                given = headers.get(b"authorization", b"").decode("latin-1")
                token = given[7:] if given.lower().startswith("bearer ") else ""
                # Anthropic's clients send the key as x-api-key.
                token = token or headers.get(b"x-api-key", b"").decode("latin-1")
                if not hmac.compare_digest(token.encode(), key.encode()):
                    await self._reply(
                        counting_send,
                        path,
                        401,
                        "A valid API key is required: send 'Authorization: Bearer <key>'.",
                    )
                    return
            body = await self._read_body(receive, settings.max_body_bytes)
            if body is None:
                await self._reply(
                    counting_send,
                    path,
                    413,
                    f"The request body is larger than the {settings.max_body_bytes:,}-byte limit.",
                )
                return
            replayed = False

            async def replay() -> Message:
                nonlocal replayed
                if not replayed:
                    replayed = True
                    return {"type": "http.request", "body": body, "more_body": False}
                return await receive()  # later reads wait for the client to disconnect

            if needs_json_check(scope["method"], path):
                # Refused here, before pydantic or any template sees it: a NaN, a lone surrogate
                # or a 900-deep nesting would otherwise surface later as a 500.
                if len(body) < 64 * 1024:
                    problem = check_json_body(body)
                else:  # a few MB take a while to walk; keep the event loop free meanwhile
                    problem = await asyncio.to_thread(check_json_body, body)
                if problem:
                    await self._reply(counting_send, path, 400, problem)
                    return
            try:
                keep_alive = _keep_alive_of(body)
            except InvalidParameterError as error:
                await self._reply(counting_send, path, 400, str(error))
                return
            # The models this request acquires stay in use until its response is over.
            with self.state.pool.request_scope(keep_alive):
                await self.app(scope, replay, counting_send)
        finally:
            route = _route_label(path, self.paths)
            counts = self.state.http_requests
            counts[(route, status_seen)] = counts.get((route, status_seen), 0) + 1

    @staticmethod
    async def _read_body(receive: Receive, limit: int) -> bytes | None:
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                return None
            chunks.append(chunk)
            if not message.get("more_body"):
                break
        return b"".join(chunks)

    @staticmethod
    async def _reply(send: Send, path: str, status: int, message: str) -> None:
        payload = json.dumps(error_body(path, status, message)).encode()
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(payload)).encode()),
        ]
        if status == 401:
            headers.append((b"www-authenticate", b"Bearer"))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": payload})


def _validation_message(error: RequestValidationError) -> str:
    problems = []
    for item in error.errors():
        if item.get("type") == "json_invalid":
            return "The request body is not valid JSON."
        where = ".".join(str(part) for part in item.get("loc", ()) if part != "body")
        if item.get("type") == "missing":
            problems.append(f"'{where}' is required")
        elif item.get("type") == "value_error":
            # Our own validators (Ollama options) write whole sentences that name the field.
            return str(item.get("msg", "")).removeprefix("Value error, ") + "."
        else:
            text = str(item.get("msg", "is invalid"))
            problems.append(f"'{where}': {text}" if where else text)
    return (
        ("Invalid request: " + "; ".join(problems[:3]) + ".")
        if problems
        else "The request body is invalid."
    )


def create_app(
    state: ServerState, *, metrics_text: Callable[[ServerState], str] = render_metrics
) -> FastAPI:
    """The app around `state`; `metrics_text` renders /metrics (Ray replicas show every replica's)."""
    from llmkit.server import anthropic_api, ollama_api, ollama_models, openai_api, responses_api

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        state.close()

    app = FastAPI(
        title="llmkit",
        version=__version__,
        docs_url=None,
        redoc_url=None,
        openapi_url="/openapi.json",  # behind the key like the API it describes
        lifespan=lifespan,
    )
    app.state.llmkit = state
    app.include_router(openai_api.router)
    app.include_router(ollama_api.router)
    app.include_router(ollama_models.router)
    app.include_router(anthropic_api.router)
    app.include_router(responses_api.router)

    @app.exception_handler(LlmkitError)
    async def _llmkit_error(request: Request, error: LlmkitError) -> JSONResponse:
        status = _status_for(error)
        headers = {"Retry-After": "1"} if status == 503 else None
        code = (
            "model_not_found"
            if isinstance(error, ModelNotFoundError)
            else ("context_length_exceeded" if isinstance(error, ContextOverflowError) else None)
        )
        return JSONResponse(
            error_body(request.url.path, status, str(error), code), status, headers=headers
        )

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, error: RequestValidationError) -> JSONResponse:
        return JSONResponse(error_body(request.url.path, 400, _validation_message(error)), 400)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, error: StarletteHTTPException) -> JSONResponse:
        # FastAPI's own refusals ({"detail": ...}) in each API's documented error shape.
        message = str(error.detail) if error.detail else "The request was refused."
        if error.status_code == 400 and "parsing the body" in message:
            message = "The request body is not valid JSON."
        if not message.endswith("."):
            message += "."
        return JSONResponse(
            error_body(request.url.path, error.status_code, message),
            error.status_code,
            headers=getattr(error, "headers", None),
        )

    @app.exception_handler(404)
    async def _not_found(request: Request, error: Exception) -> JSONResponse:
        return JSONResponse(
            error_body(request.url.path, 404, f"There is no endpoint {request.url.path}."), 404
        )

    @app.exception_handler(405)
    async def _wrong_method(request: Request, error: Exception) -> JSONResponse:
        message = f"{request.method} is not allowed on {request.url.path}."
        return JSONResponse(error_body(request.url.path, 405, message), 405)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, error: Exception) -> JSONResponse:
        log.exception("unexpected error on %s", request.url.path)
        return JSONResponse(
            error_body(request.url.path, 500, "The server failed on this request; see its log."),
            500,
        )

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "models": list(state.models)}

    @app.get("/metrics")
    async def metrics() -> PlainTextResponse:
        return PlainTextResponse(metrics_text(state), media_type="text/plain; version=0.0.4")

    @app.get("/", response_class=HTMLResponse)
    async def page() -> HTMLResponse:
        # The page loads only its own files and talks only to this server: an injected script
        # or style (say, through a model's reply) is refused by the browser.
        return HTMLResponse(_web_file("index.html"), headers={"Content-Security-Policy": PAGE_CSP})

    @app.get("/web/{name}")
    async def web_file(name: str) -> Response:
        types = {"app.js": "text/javascript", "style.css": "text/css"}
        if name not in types:
            raise ModelNotFoundError(f"There is no file {name}.")  # 404 in both shapes
        return Response(_web_file(name), media_type=types[name])

    @app.get("/favicon.ico")
    async def favicon() -> Response:
        return Response(status_code=204)

    # The guard wraps everything, so even 404s and bad JSON need the key and respect the size limit.
    paths = frozenset(
        path
        for path in _route_paths(app.routes)
        if "{" not in path and path.startswith(("/v1/", "/api/"))
    ) | {"/health", "/metrics"}
    app.add_middleware(GuardMiddleware, state=state, paths=paths)
    # Added last, so it runs first: a preflight carries no key, and a refused origin or Host
    # should learn nothing, not even whether a key is set.
    app.add_middleware(SecurityMiddleware, settings=state.settings, error_body=error_body)
    return app


def _web_file(name: str) -> str:
    return (
        resources.files("llmkit.server").joinpath("web").joinpath(name).read_text(encoding="utf-8")
    )


def bind_socket(host: str, port: int) -> socket.socket:
    """Take the address now, so a port in use fails at once, before any model loads."""
    check_port(port)
    address = host.strip("[]")
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does
    try:
        sock.bind((address, port))
    except OSError as error:
        sock.close()
        if error.errno == errno.EADDRINUSE:
            raise InvalidParameterError(
                f"Port {port} on {host} is already in use; stop the other server or choose "
                "another port with --port."
            ) from None
        raise InvalidParameterError(
            f"Cannot listen on {host} port {port}: {error.strerror or error}."
        ) from None
    return sock


def run_server(
    models: list[str], settings: ServerSettings, *, home: str | None = None, on_ready: Any = None
) -> None:
    """Bind the address, load the models (none: the store's, on demand), then serve until interrupted."""
    import uvicorn

    sock = bind_socket(settings.host, settings.port)
    try:
        state = load_state(models, settings, home=home)
        app = create_app(state)
        config = uvicorn.Config(
            app,
            host=settings.host,
            port=settings.port,
            log_level="info",
            access_log=True,
            timeout_graceful_shutdown=5,
        )
        if on_ready:
            on_ready(state)  # only now: the address is ours and the models are loaded
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        sock.close()
