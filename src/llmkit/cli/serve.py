"""`llmkit serve`: an OpenAI- and Ollama-compatible API and a web chat page on this machine."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any

import typer

from llmkit.cli.options import at_least, default_of, settings_options
from llmkit.cli.output import say
from llmkit.engines import ENGINE_NAMES, check_engine_name
from llmkit.errors import InvalidParameterError, require_module
from llmkit.server.state import ServerSettings

if TYPE_CHECKING:
    from llmkit.server.ray_replicas import ReplicaOptions

ENGINE_HELP = (
    "llamacpp (default): GGUF files on llama.cpp; use it for quantized models and on CPU. "
    "transformers: PyTorch, on CUDA when available; use it for Hugging Face folders "
    "(safetensors), or for a CUDA GPU when llama-cpp-python has no GPU build. GGUF files load "
    "de-quantized to float. Needs the torch extra. "
    "vllm: starts vLLM's OpenAI server for the model (a GPU node with vLLM installed) and "
    "generates there; llmkit keeps templates, tools, the APIs and the page."
)


def _engine_name(name: str) -> str:
    # vllm is no engine of this process: a vLLM server generates (server/remote_backend.py).
    if name == "vllm":
        return name
    try:
        return check_engine_name(name)
    except InvalidParameterError:
        raise InvalidParameterError(
            f"Unknown engine '{name}'; choose one of: {', '.join((*ENGINE_NAMES, 'vllm'))}."
        ) from None


def _option(parse: Callable[[str], Any], value: str | None, flag: str) -> Any:
    """An option's value parsed, or its one-sentence refusal naming the option."""
    if value is None:
        return None
    try:
        return parse(value)
    except InvalidParameterError as error:
        raise InvalidParameterError(f"{flag}: {error}") from None


def register(app: typer.Typer) -> None:
    @app.command()
    @settings_options(ServerSettings)
    def serve(
        models: Annotated[
            list[str] | None,
            typer.Argument(
                help="Models to serve, loaded now and kept loaded (default: every model in the "
                "store, each loaded when first asked for)."
            ),
        ] = None,
        engine: Annotated[
            str,
            typer.Option(
                "--engine",
                "-e",
                help=ENGINE_HELP,
                callback=_engine_name,  # refused before anything loads or binds
            ),
        ] = default_of(ServerSettings, "engine"),
        # Keyword-only options come after ServerSettings' own in --help.
        *,
        allow_origin: Annotated[
            list[str] | None,
            typer.Option(
                "--allow-origin",
                help="A web origin whose pages may call the API, e.g. http://localhost:3000 "
                "('*' is a wildcard: http://localhost:*); repeatable. LLMKIT_ORIGINS adds a "
                "comma-separated list. The page at / needs none.",
            ),
        ] = None,
        replicas: Annotated[
            int | None,
            typer.Option(
                help="Serve with N Ray Serve replicas, each with its own engine and slots; Ray "
                "routes requests among them (needs the ray extra). Without --ray-address, a "
                "local Ray on loopback.",
                callback=at_least("--replicas", 1, "replica"),
            ),
        ] = None,
        min_replicas: Annotated[
            int | None,
            typer.Option(
                help="With --replicas: autoscale, never below this many.",
                callback=at_least("--min-replicas", 1, "replica"),
            ),
        ] = None,
        max_replicas: Annotated[
            int | None,
            typer.Option(
                help="With --replicas: autoscale, never above this many.",
                callback=at_least("--max-replicas", 1, "replica"),
            ),
        ] = None,
        ray_address: Annotated[
            str | None,
            typer.Option(
                help="Run the replicas on this Ray cluster (e.g. 10.0.0.5:6379, or 'auto' for "
                "the one `ray start` made here) instead of a local Ray."
            ),
        ] = None,
        keep_alive: Annotated[
            str,
            typer.Option(
                help="How long a model loaded on demand stays loaded after its last request: "
                "'5m', '30s', '1h', 0 (unload at once) or -1 (for good); a request's keep_alive "
                "overrides it."
            ),
        ] = "5m",
        memory_budget: Annotated[
            str | None,
            typer.Option(
                help="Memory the loaded models may take together, e.g. 8GB (default: 90% of the "
                "memory free at start). Past it the least recently used idle model is unloaded."
            ),
        ] = None,
        **options: Any,
    ) -> None:
        """Serve models over an OpenAI- and Ollama-compatible HTTP API, with a web chat page at /."""
        require_module("fastapi", feature="llmkit serve", extra="serve")
        require_module("uvicorn", feature="llmkit serve", extra="serve")
        from llmkit.server.app import check_port, run_server
        from llmkit.server.model_pool import parse_keep_alive, parse_size
        from llmkit.server.security import ORIGINS_ENV, parse_origins
        from llmkit.server.state import check_exposure

        check_port(options["port"])
        origins = parse_origins([*(allow_origin or []), os.environ.get(ORIGINS_ENV, "")])
        options["api_key"] = options["api_key"] or None  # an empty LLMKIT_API_KEY is no key
        settings = ServerSettings(
            engine=engine,
            allowed_origins=origins,
            keep_alive=_option(parse_keep_alive, keep_alive, "--keep-alive"),
            memory_budget=_option(parse_size, memory_budget, "--memory-budget"),
            **options,
        )
        host, port, api_key = settings.host, settings.port, settings.api_key
        check_exposure(settings)  # before loading anything: a refusal should be instant
        from llmkit.server.ray_replicas import replica_options

        wanted = replica_options(replicas, min_replicas, max_replicas, ray_address)
        if wanted:
            _serve_replicas(models or ["smollm2"], settings, wanted)
            return

        def ready(state: object) -> None:
            shown = f"[{host}]" if ":" in host else host
            served = state.models  # type: ignore[attr-defined]
            # The engines that actually loaded the models, so the log shows what serves them.
            engines = sorted(
                {
                    getattr(item.scheduler, "engine_label", None) or item.model.engine.name
                    for item in served.values()
                }
            )
            what = (
                f"{', '.join(served)} ({', '.join(engines)})"
                if served
                else "the store's models on demand"
            )
            say(
                "Serving [bold]{}[/] at [bold]{}[/] ({} slots). "
                "OpenAI: /v1, Ollama: /api, chat page: /",
                what,
                f"http://{shown}:{port}",
                settings.parallel,
                err=True,
            )
            if api_key:
                say("API key required: send 'Authorization: Bearer <key>'.", err=True)
            if origins:
                say("Web origins allowed: {}", ", ".join(origins), err=True)
            if settings.log_exchanges:
                say("Exchanges are kept in `llmkit logs`.", err=True)

        run_server(models or [], settings, on_ready=ready)


def _serve_replicas(models: list[str], settings: ServerSettings, wanted: ReplicaOptions) -> None:
    from llmkit.server.ray_replicas import ReplicaDeployment, run_replicas

    def ready(deployment: ReplicaDeployment) -> None:
        scaling = (
            f", autoscaling {deployment.min_replicas} to {deployment.max_replicas}"
            if deployment.max_replicas is not None
            else ""
        )
        threads = (
            f", {deployment.threads} thread{'s' if deployment.threads > 1 else ''} each"
            if deployment.threads
            else ""
        )
        say(
            "Serving [bold]{}[/] with {} Ray replicas{} on {} node(s) ({} Ray) at [bold]{}[/] "
            "({} slots{}). OpenAI: /v1, Ollama: /api, chat page: /",
            ", ".join(deployment.models),
            deployment.replicas,
            scaling,
            deployment.nodes,
            deployment.cluster,
            deployment.url,
            settings.parallel,
            threads,
            err=True,
        )
        if settings.api_key:
            say("API key required: send 'Authorization: Bearer <key>'.", err=True)

    run_replicas(models, settings, wanted, on_ready=ready)
