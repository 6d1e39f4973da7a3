"""What keeps web pages and hostile requests from driving the local server.

A loopback server is reachable from every page open in the user's browser: a page can POST to
127.0.0.1 without a CORS preflight (text/plain), and with DNS rebinding it can even read answers.
The rules here are the ones trusted local servers apply: only loopback Host headers, no cross-origin
requests but from origins the user allowed, JSON bodies only, and JSON that stays shallow, finite
and valid Unicode, so no later stage meets a RecursionError, a NaN or an unencodable string.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Callable, Iterable
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from llmkit.errors import InvalidParameterError
from llmkit.server.state import ServerSettings, is_loopback

ORIGINS_ENV = "LLMKIT_ORIGINS"
# Deep enough for any real request (a JSON schema nested 30 levels), shallow enough that no
# recursive code (pydantic, templates, grammar builders) comes near Python's recursion limit.
MAX_JSON_DEPTH = 64
ALLOWED_METHODS = "GET, POST, DELETE, OPTIONS"
_BODY_METHODS = ("POST", "PUT", "PATCH")
_API_PREFIXES = ("/v1/", "/api/")
_SURROGATE = re.compile("[\ud800-\udfff]")
_DEFAULT_PORTS = {"http": "80", "https": "443"}
_SURROGATE_MESSAGE = (
    "The request body holds a lone UTF-16 surrogate (like \\ud800); send valid Unicode text."
)

ErrorBody = Callable[[str, int, str], dict[str, Any]]


# ---- settings -------------------------------------------------------------------------------
def parse_origins(values: Iterable[str]) -> tuple[str, ...]:
    """Origins from --allow-origin and LLMKIT_ORIGINS: 'http://host:port', '*' wildcards allowed."""
    origins: list[str] = []
    for value in values:
        for item in value.split(","):
            origin = item.strip().rstrip("/").lower()
            if not origin:
                continue
            if origin not in ("*", "null") and "://" not in origin:
                raise InvalidParameterError(
                    f"The allowed origin '{item.strip()}' needs a scheme, like "
                    "http://localhost:3000 (or a pattern like http://localhost:*)."
                )
            origins.append(origin)
    return tuple(dict.fromkeys(origins))


def origins_from_environment() -> tuple[str, ...]:
    return parse_origins([os.environ.get(ORIGINS_ENV, "")])


def _pattern(origin: str) -> re.Pattern[str]:
    # '*' stands for any run of characters but '/', so 'http://localhost:*' matches every port and
    # nothing on another host.
    return re.compile(".*" if origin == "*" else re.escape(origin).replace(r"\*", "[^/]*"))


# ---- host and origin ------------------------------------------------------------------------
def host_name(host_header: str) -> str:
    """'127.0.0.1:8080' -> '127.0.0.1', '[::1]:8080' -> '::1', 'localhost.' -> 'localhost'."""
    host = host_header.strip().lower()
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else host
    if host.count(":") == 1:
        host = host.split(":", 1)[0]
    return host.rstrip(".")


def _normal_origin(origin: str) -> str:
    origin = origin.strip().rstrip("/").lower()
    scheme, _, rest = origin.partition("://")
    port = _DEFAULT_PORTS.get(scheme)
    if port and rest.endswith(":" + port) and not rest.endswith("]"):
        origin = f"{scheme}://{rest[: -len(port) - 1]}"
    return origin


class SecurityMiddleware:
    """Host, Origin, CORS and Content-Type rules, on the raw ASGI messages, before the API key."""

    def __init__(self, app: ASGIApp, settings: ServerSettings, error_body: ErrorBody) -> None:
        self.app, self.error_body = app, error_body
        # Bound beyond this machine with a key, the server answers whatever name reaches it.
        self.check_host = not (settings.api_key and not is_loopback(settings.host))
        self.allowed = [_pattern(origin) for origin in settings.allowed_origins]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        headers = {
            key.decode("latin-1"): value.decode("latin-1") for key, value in scope["headers"]
        }
        host = headers.get("host", "")
        if self.check_host and host and not is_loopback(host_name(host)):
            await self._refuse(
                send,
                path,
                403,
                f"The Host '{host[:100]}' is not this machine's loopback name; a server bound to "
                "127.0.0.1 answers only localhost, 127.0.0.1 and [::1] (this refuses DNS rebinding).",
            )
            return
        origin = headers.get("origin")
        cross_origin = origin is not None and not self._own_origin(scope, origin, host)
        if cross_origin and not self._allowed(origin or ""):
            await self._refuse(
                send,
                path,
                403,
                f"Requests from the web origin '{(origin or '')[:100]}' are refused; allow it with "
                "--allow-origin or LLMKIT_ORIGINS.",
            )
            return
        if scope["method"] == "OPTIONS" and origin and "access-control-request-method" in headers:
            await self._preflight(send, origin, headers)
            return
        if (
            scope["method"] in _BODY_METHODS
            and path.startswith(_API_PREFIXES)
            and not _is_json(headers.get("content-type", ""))
        ):
            await self._refuse(
                send,
                path,
                415,
                "Send the request body as JSON with 'Content-Type: application/json'.",
            )
            return
        if not cross_origin:
            await self.app(scope, receive, send)
            return

        async def cors_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                extra = [
                    (b"access-control-allow-origin", (origin or "").encode("latin-1")),
                    (b"vary", b"Origin"),
                ]
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        await self.app(scope, receive, cors_send)

    @staticmethod
    def _own_origin(scope: Scope, origin: str, host: str) -> bool:
        scheme = scope.get("scheme", "http")
        return bool(host) and _normal_origin(origin) == _normal_origin(f"{scheme}://{host}")

    def _allowed(self, origin: str) -> bool:
        origin = _normal_origin(origin)
        return any(pattern.fullmatch(origin) for pattern in self.allowed)

    async def _preflight(self, send: Send, origin: str, headers: dict[str, str]) -> None:
        # Reached only for allowed origins: the browser may then send the real request.
        reply = [
            (b"access-control-allow-origin", origin.encode("latin-1")),
            (b"access-control-allow-methods", ALLOWED_METHODS.encode()),
            (b"access-control-max-age", b"600"),
            (b"vary", b"Origin"),
            (b"content-length", b"0"),
        ]
        requested = headers.get("access-control-request-headers")
        if requested:
            reply.append((b"access-control-allow-headers", requested.encode("latin-1")))
        await send({"type": "http.response.start", "status": 204, "headers": reply})
        await send({"type": "http.response.body", "body": b""})

    async def _refuse(self, send: Send, path: str, status: int, message: str) -> None:
        payload = json.dumps(self.error_body(path, status, message)).encode()
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(payload)).encode()),
        ]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": payload})


def _is_json(content_type: str) -> bool:
    return content_type.split(";", 1)[0].strip().lower() == "application/json"


def needs_json_check(method: str, path: str) -> bool:
    return method in _BODY_METHODS and path.startswith(_API_PREFIXES)


# ---- the JSON body --------------------------------------------------------------------------
class _NotFinite(ValueError):
    pass


def _refuse_constant(name: str) -> Any:
    raise _NotFinite(name)


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # 1e999 parses to inf
        raise _NotFinite(text)
    return value


def check_json_body(body: bytes) -> str | None:
    """Why this API body must be refused (one sentence), or None if it is fit to validate."""
    if not body.strip():
        return None  # the schema says what is missing
    try:
        data = json.loads(body, parse_constant=_refuse_constant, parse_float=_finite_float)
    except _NotFinite:
        return "NaN and Infinity are not valid JSON numbers; send finite numbers."
    except RecursionError:
        return f"The request body nests deeper than {MAX_JSON_DEPTH} levels."
    except ValueError:
        return "The request body is not valid JSON."
    # Walk without recursion: the depth is what is being bounded.
    stack: list[tuple[Any, int]] = [(data, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, str):
            if _SURROGATE.search(value):
                return _SURROGATE_MESSAGE
        elif isinstance(value, (dict, list)):
            if depth > MAX_JSON_DEPTH:
                return f"The request body nests deeper than {MAX_JSON_DEPTH} levels."
            if isinstance(value, dict):
                for key, item in value.items():
                    if _SURROGATE.search(key):
                        return _SURROGATE_MESSAGE
                    stack.append((item, depth + 1))
            else:
                stack.extend((item, depth + 1) for item in value)
    return None
