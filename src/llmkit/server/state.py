"""What a running server holds: its settings and the models it serves, each with a batch scheduler."""

from __future__ import annotations

import ipaddress
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from llmkit.errors import InvalidParameterError, LlmkitError, ModelNotFoundError
from llmkit.server.model_pool import DEFAULT_KEEP_ALIVE, ModelPool
from llmkit.settings import setting
from llmkit.store.catalog import DEFAULT_MODEL

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
    # Bounded here, not only by the scheduler: served on demand, no scheduler exists until the
    # first request, and a bad value must stop `serve` before it announces anything.
    parallel: int = setting(
        4,
        help="Requests decoded together (slots); more wait in a queue.",
        minimum=1,
        maximum=64,
        unit="slot",
    )
    max_queue: int = setting(
        32,
        flags=("--queue",),
        help="Requests that may wait for a slot; past it: HTTP 503.",
        minimum=0,
        unit="requests",
    )
    context_length: int | None = setting(
        None,
        flags=("--context",),
        help="Context length of each slot (default: the model's, at most 4096).",
        minimum=16,  # the scheduler's smallest slot
        unit="tokens",
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
    # Seconds a model stays loaded after its last request (a request's keep_alive overrides it;
    # math.inf: for good), and the bytes loaded models may take together (None: 90% of the
    # memory free at start). `serve` reads both as text ("5m", "8GB"): cli/serve.py.
    keep_alive: float = DEFAULT_KEEP_ALIVE
    memory_budget: int | None = None
    log_exchanges: bool = setting(
        False, flags=("--log",), help="Keep every exchange in the local history (`llmkit logs`)."
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
    """The server's settings, its counters and the pool of models it serves.

    Built from a list of loaded models (they are then the only ones, as in tests), or around a
    pool made by `load_state`.
    """

    def __init__(
        self,
        models: list[ServedModel],
        settings: ServerSettings,
        *,
        pool: ModelPool | None = None,
        default: str | None = None,
        home: str | None = None,
    ) -> None:
        if pool is None:
            if not models:
                raise InvalidParameterError("A server needs at least one model.")
            pool = ModelPool(
                None, names=[m.name for m in models], keep_alive=settings.keep_alive, reaper=False
            )
            for served in models:
                pool.add(served)
        self.pool = pool
        self.default = default or (models[0].name if models else DEFAULT_MODEL)
        self.settings = settings
        self.started = time.time()
        self.http_requests: dict[tuple[str, int], int] = {}
        self.home = home
        self.exchange_log: Any = None
        if settings.log_exchanges:
            from pathlib import Path

            from llmkit.server.exchange_log import ExchangeLog

            self.exchange_log = ExchangeLog(Path(home) if home else None)
        self._manifests: dict[str, Any] = {}

    @property
    def on_demand(self) -> bool:
        """Whether any model of the store may be asked for (no fixed list)."""
        return self.pool.names is None

    @property
    def models(self) -> dict[str, ServedModel]:
        """The models loaded now, by name."""
        return self.pool.models()

    def get(self, name: str | None) -> ServedModel:
        """The model called `name` (no name: the default), loaded if it was not; ':latest' is ignored.

        Inside a request scope it stays loaded until the request ends. Loading blocks: call it
        off the event loop.
        """
        return self.pool.acquire(name or self.default)

    def describe(self, name: str | None) -> tuple[str, Any, Any]:
        """The served name, manifest and prompt format of a model a request may name, without
        loading it: /api/show answers from the store, and must not evict the model in use."""
        key = self.pool.key(name or self.default)
        model = getattr(self.pool.models().get(key), "model", None)
        if model is not None and getattr(model, "format", None) is not None:
            return key, model.manifest, model.format
        from llmkit.chat.prompt_format import PromptFormat
        from llmkit.store.store import ModelStore

        manifest = ModelStore(self.home).resolve(key)
        # As Model builds it; a template that cannot be used fails here as it would at load.
        prompt_format = PromptFormat.from_info(
            manifest.info, recipe_override=manifest.template_override
        )
        return key, manifest, prompt_format

    def listing(self) -> list[tuple[str, Any]]:
        """Every model a request may name, with its manifest: the store's, or the fixed list."""
        for name, served in self.pool.models().items():
            manifest = getattr(getattr(served, "model", None), "manifest", None)
            if manifest is not None:
                self._manifests[name] = manifest
        if not self.on_demand:
            names = self.pool.names or []
            return [(name, self._manifests[name]) for name in names if name in self._manifests]
        from llmkit.store.store import ModelStore

        listed = [(manifest.name, manifest) for manifest in ModelStore(self.home).list()]
        # The default first: a client that takes the first model (the chat page) gets it.
        return sorted(listed, key=lambda item: item[0] != self.default)

    def exchange_hook(self, ask: Any, model: str) -> Any:
        """What a finished generation calls to be logged (`serve --log`), or None."""
        if self.exchange_log is None:
            return None
        return lambda result: self.exchange_log.record(model, ask, result)

    def close(self) -> None:
        self.pool.close()
        if self.exchange_log is not None:
            self.exchange_log.close()


def _load_served(name: str, settings: ServerSettings, home: str | None) -> ServedModel:
    """Load one model (a store name, or a path in a fixed list) and start its scheduler."""
    import llmkit
    from llmkit.generation.batching import BatchScheduler

    if settings.engine_url or settings.engine == "vllm":
        from llmkit.server.remote_backend import served_remote

        return served_remote(name, settings, home)
    model = llmkit.load(
        name,
        engine=settings.engine,
        context_length=settings.context_length,
        threads=settings.threads,
        home=home,
    )
    try:
        scheduler = BatchScheduler(
            model,
            parallel=settings.parallel,
            max_queue=settings.max_queue,
            slot_context=settings.context_length,
            threads=settings.threads,
        )
    except BaseException:
        model.close()
        raise
    return ServedModel(model.name, model, scheduler)


def model_memory(manifest: Any, settings: ServerSettings) -> int:
    """The planner's estimate of a loaded model's memory: weights, every slot's KV cache, buffers."""
    if settings.engine_url or settings.engine == "vllm":
        return 0  # the weights live in the engine server; this process keeps a tokenizer
    from pathlib import Path

    from llmkit.plan.memory import PlanRequest, estimate_memory
    from llmkit.plan.resolve import spec_from_path

    try:
        spec = spec_from_path(Path(manifest.path))
        request = PlanRequest(
            task="chat",
            context=settings.context_length,
            batch_size=settings.parallel,
            engine=settings.engine,
        )
        return int(estimate_memory(spec, request).total)
    except (LlmkitError, OSError, ValueError, KeyError):
        # A model the planner cannot read still counts: its file size is the least it takes.
        return int(manifest.size_bytes or 0)


def memory_budget(settings: ServerSettings) -> Any:
    """The bytes loaded models may take: --memory-budget, else 90% of the memory free at start,
    and never more than what is free now beside the models already loaded."""
    if settings.memory_budget is not None:
        fixed = settings.memory_budget
        return lambda used: fixed
    from llmkit.system_memory import memory_info

    total, available = memory_info()
    if not total:
        return lambda used: None  # this OS does not say: no limit
    start = int((available or total) * 0.9)

    def budget(used: int) -> int:
        free_now = memory_info()[1]
        return start if free_now is None else min(start, used + free_now)

    return budget


def load_state(names: list[str], settings: ServerSettings, home: str | None = None) -> ServerState:
    """The fixed list NAMES loaded now (kept loaded), or, without names, the whole store on demand."""
    check_exposure(settings)
    budget = memory_budget(settings)
    if not names:
        from llmkit.store.paths import validate_model_name
        from llmkit.store.store import ModelStore

        store = ModelStore(home)

        def estimate(key: str) -> int:
            # A request's name is only ever a store name, never a path to a file (a name ending
            # in .gguf would be one to the loader).
            if key.endswith(".gguf"):
                raise ModelNotFoundError(f"The model '{key}' is not in the store.")
            return model_memory(store.get(validate_model_name(key)), settings)

        pool = ModelPool(
            lambda key: _load_served(key, settings, home),
            estimate=estimate,
            budget=budget,
            keep_alive=settings.keep_alive,
        )
        return ServerState([], settings, pool=pool, home=home)
    served: list[ServedModel] = []
    sources: dict[str, str] = {}  # a served name -> what was given for it (a name or a path)
    try:
        for name in names:
            item = _load_served(name, settings, home)
            served.append(item)
            sources[item.name] = name
    except BaseException:
        for item in served:
            item.close()
        raise
    pool = ModelPool(
        lambda key: _load_served(sources[key], settings, home),
        estimate=lambda key: next(
            model_memory(m.model.manifest, settings) for m in served if m.name == key
        ),
        budget=budget,
        keep_alive=settings.keep_alive,
        names=list(sources),
        pinned=sources,
    )
    for item in served:
        pool.add(item, size=model_memory(item.model.manifest, settings))
    return ServerState(served, settings, pool=pool, home=home)
