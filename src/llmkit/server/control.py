"""Talking to a running `llmkit serve` from another process: what it has loaded, and unloading.

`llmkit ps` and `llmkit stop` use it. Only the standard library: neither needs the serve extra.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

from llmkit.errors import InvalidParameterError, LlmkitError, ModelNotFoundError

TIMEOUT_SECONDS = 30.0


def check_port(port: int) -> int:
    if not 1 <= port <= 65535:
        raise InvalidParameterError(f"The port must be between 1 and 65535, not {port}.")
    return port


def server_url(host: str, port: int) -> str:
    shown = f"[{host.strip('[]')}]" if ":" in host else host
    return f"http://{shown}:{port}"


def _call(url: str, path: str, api_key: str | None, body: dict[str, Any] | None = None) -> Any:
    headers = {"Content-Type": "application/json"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url + path, data=data, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_SECONDS) as response:
            return json.loads(response.read() or b"null")
    except urllib.error.HTTPError as error:
        try:
            message = json.loads(error.read()).get("error")
        except (ValueError, AttributeError):
            message = None
        if error.code == 401:
            message = "The server needs an API key: pass --api-key or set LLMKIT_API_KEY."
        if error.code == 404:
            raise ModelNotFoundError(message or f"{url} has no {path}.") from None
        raise LlmkitError(message or f"The server at {url} answered {error.code}.") from None
    except (urllib.error.URLError, OSError) as error:
        raise LlmkitError(
            f"No llmkit server answers at {url}; start one with `llmkit serve` (or give its "
            "--host and --port)."
        ) from error


def loaded_models(url: str, api_key: str | None = None) -> list[dict[str, Any]]:
    """The server's /api/ps entries: name, size (bytes), expires_at and the rest of Ollama's shape."""
    return list(_call(url, "/api/ps", api_key).get("models", []))


def stop_model(url: str, name: str, api_key: str | None = None) -> None:
    """Unload NAME now, as `ollama stop` does: an empty generate with keep_alive 0."""
    loaded = [entry["name"] for entry in loaded_models(url, api_key)]
    if name not in loaded and name.removesuffix(":latest") not in loaded:
        shown = ", ".join(loaded) if loaded else "none"
        raise ModelNotFoundError(f"'{name}' is not loaded on {url} (loaded: {shown}).")
    _call(url, "/api/generate", api_key, {"model": name, "keep_alive": 0, "stream": False})
