"""What a running server holds: its settings and the models it serves, each with a batch scheduler."""

from __future__ import annotations

import ipaddress
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from llmkit.errors import InvalidParameterError, ModelNotFoundError
from llmkit.settings import setting

DEFAULT_PORT = 11435


@dataclass(frozen=True)
class ServerSettings:
    """How `llmkit serve` runs. A field declared with `setting` is also its command-line option
    (cli/options.py derives flag, default, help and range from it)."""

    host: str = setting(
        "127.0.0.1", help="Address to listen on; anything but loopback needs an API key."
    )
    port: int = setting(DEFAULT_PORT, help="Port to listen on.")  # check_port() bounds it
    api_key: str | None = setting(
        None,
        envvar="LLMKIT_API_KEY",
        help="Require 'Authorization: Bearer KEY' on every endpoint but /health.",
    )
    parallel: int = setting(4, help="Requests decoded together (slots); more wait in a queue.")
    max_queue: int = setting(
        32, flags=("--queue",), help="Requests that may wait for a slot; past it: HTTP 503."
    )
    context_length: int | None = setting(
        None,
        flags=("--context",),
        help="Context length of each slot (default: the model's, at most 4096).",
        minimum=1,
        unit="token",
    )  # None: the model's loaded context
    threads: int | None = setting(
        None, help="CPU threads (default: all cores).", minimum=1, unit="thread"
    )
    max_body_bytes: int = setting(
        4 * 1024 * 1024,
        flags=("--max-body",),
        help="Largest request body accepted, in bytes.",
        minimum=1,
        unit="byte",
    )
    log_prompts: bool = setting(
        False,
        flags=("--log-prompts/--no-log-prompts",),
        help="Write prompts to the server log (off: they stay private).",
    )
    engine: str = "llamacpp"  # which engine loads the served models (the CLI's --engine)
    allowed_origins: tuple[str, ...] = ()  # web origins besides the server's own (CORS)
    # A streamed reply whose client reads nothing for this long is cancelled, freeing its slot.
    stall_seconds: float = 30.0
    # An OpenAI-compatible engine server that generates (server/remote_backend.py); with
    # engine "vllm" and no URL, llmkit starts vLLM with these parallel settings.
    engine_url: str | None = setting(
        None,
        help="Generate on a running OpenAI-compatible engine server (vLLM, llama-server, "
        "SGLang, another llmkit), e.g. http://127.0.0.1:8000; llmkit sends it templated "
        "prompts. LLMKIT_ENGINE_API_KEY is sent as its key.",
    )
    tensor_parallel: int = setting(
        1,
        help="With --engine vllm: GPUs each layer is split over (vLLM's --tensor-parallel-size).",
        minimum=1,
        unit="GPU",
    )
    pipeline_parallel: int = setting(
        1,
        help="With --engine vllm: pipeline stages the layers are cut into (vLLM's "
        "--pipeline-parallel-size).",
        minimum=1,
        unit="stage",
    )


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
