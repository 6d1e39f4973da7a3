"""What a running server holds: its settings and the models it serves, each with a batch scheduler."""

from __future__ import annotations

import ipaddress
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from llmkit.errors import InvalidParameterError, ModelNotFoundError

DEFAULT_PORT = 11435


@dataclass(frozen=True)
class ServerSettings:
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    api_key: str | None = None
    parallel: int = 4
    max_queue: int = 32
    context_length: int | None = None  # per slot; None: the model's loaded context
    threads: int | None = None
    max_body_bytes: int = 4 * 1024 * 1024
    log_prompts: bool = False
    engine: str = "llamacpp"  # which engine loads the served models
    allowed_origins: tuple[str, ...] = ()  # web origins besides the server's own (CORS)
    # A streamed reply whose client reads nothing for this long is cancelled, freeing its slot.
    stall_seconds: float = 30.0
    # An OpenAI-compatible engine server that generates (server/remote_backend.py); with
    # engine "vllm" and no URL, llmkit starts vLLM with these parallel settings.
    engine_url: str | None = None
    tensor_parallel: int = 1
    pipeline_parallel: int = 1


def is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name could resolve anywhere; treat it as exposed


def check_exposure(settings: ServerSettings) -> None:
    """Refuse to listen beyond this machine without an API key."""
    if not is_loopback(settings.host) and not settings.api_key:
        raise InvalidParameterError(
            f"Listening on {settings.host} exposes the server to the network; set an API key with "
            "--api-key or LLMKIT_API_KEY, or bind 127.0.0.1."
        )


@dataclass
class ServedModel:
    name: str
    model: Any  # llmkit.model.Model
    scheduler: Any  # llmkit.generation.batching.BatchScheduler
    loaded_at: float = field(default_factory=time.time)
    _embedder: Any = None
    _embedder_lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def embedder(self) -> Any:
        """Created on first use (the engine makes its embedding context on the first embed())."""
        with self._embedder_lock:
            if self._embedder is None:
                from llmkit.server.embeddings import Embedder

                self._embedder = Embedder(self.model)
            return self._embedder

    def close(self) -> None:
        self.scheduler.close()
        if self._embedder is not None:
            self._embedder.close()
        self.model.close()


class ServerState:
    def __init__(self, models: list[ServedModel], settings: ServerSettings) -> None:
        if not models:
            raise InvalidParameterError("A server needs at least one model.")
        self.models = {served.name: served for served in models}
        self.default = models[0].name
        self.settings = settings
        self.started = time.time()
        self.http_requests: dict[tuple[str, int], int] = {}

    def get(self, name: str | None) -> ServedModel:
        """The served model called `name`; no name means the first one; Ollama's ":latest" is ignored."""
        if not name:
            return self.models[self.default]
        if name in self.models:
            return self.models[name]
        base = name.removesuffix(":latest")
        if base in self.models:
            return self.models[base]
        raise ModelNotFoundError(
            f"The model '{name}' is not served here; available: {', '.join(self.models)}."
        )

    def close(self) -> None:
        for served in self.models.values():
            served.close()


def load_state(names: list[str], settings: ServerSettings, home: str | None = None) -> ServerState:
    """Load each model and start its scheduler."""
    import llmkit
    from llmkit.generation.batching import BatchScheduler

    check_exposure(settings)
    served: list[ServedModel] = []
    try:
        for name in names:
            if settings.engine_url or settings.engine == "vllm":
                from llmkit.server.remote_backend import served_remote

                served.append(served_remote(name, settings, home))
                continue
            model = llmkit.load(
                name,
                engine=settings.engine,
                context_length=settings.context_length,
                threads=settings.threads,
                home=home,
            )
            scheduler = BatchScheduler(
                model,
                parallel=settings.parallel,
                max_queue=settings.max_queue,
                slot_context=settings.context_length,
                threads=settings.threads,
            )
            served.append(ServedModel(model.name, model, scheduler))
    except BaseException:
        for item in served:
            item.close()
        raise
    return ServerState(served, settings)
