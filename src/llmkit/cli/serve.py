"""`llmkit serve`: an OpenAI- and Ollama-compatible API and a web chat page on this machine."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Annotated

import typer

from llmkit.cli.options import at_least, default_of
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


def register(app: typer.Typer) -> None:
    @app.command()
    def serve(
        models: Annotated[
            list[str] | None,
            typer.Argument(help="Models to serve (default: the built-in smollm2)."),
        ] = None,
        host: Annotated[
            str, typer.Option(help="Address to listen on; anything but loopback needs an API key.")
        ] = default_of(ServerSettings, "host"),
        port: Annotated[int, typer.Option(help="Port to listen on.")] = default_of(
            ServerSettings, "port"
        ),
        engine: Annotated[
            str,
            typer.Option(
                "--engine",
                "-e",
                help=ENGINE_HELP,
                callback=_engine_name,  # refused before anything loads or binds
            ),
        ] = default_of(ServerSettings, "engine"),
        api_key: Annotated[
            str | None,
            typer.Option(
                "--api-key",
                envvar="LLMKIT_API_KEY",
                show_envvar=True,
                help="Require 'Authorization: Bearer KEY' on every endpoint but /health.",
            ),
        ] = None,
        parallel: Annotated[
            int, typer.Option(help="Requests decoded together (slots); more wait in a queue.")
        ] = default_of(ServerSettings, "parallel"),
        queue: Annotated[
            int, typer.Option(help="Requests that may wait for a slot; past it: HTTP 503.")
        ] = default_of(ServerSettings, "max_queue"),
        context: Annotated[
            int | None,
            typer.Option(
                help="Context length of each slot (default: the model's, at most 4096).",
                callback=at_least("--context", 1, "token"),
            ),
        ] = default_of(ServerSettings, "context_length"),
        threads: Annotated[
            int | None,
            typer.Option(
                help="CPU threads (default: all cores).",
                callback=at_least("--threads", 1, "thread"),
            ),
        ] = default_of(ServerSettings, "threads"),
        max_body: Annotated[
            int,
            typer.Option(
                help="Largest request body accepted, in bytes.",
                callback=at_least("--max-body", 1, "byte"),
            ),
        ] = default_of(ServerSettings, "max_body_bytes"),
        log_prompts: Annotated[
            bool, typer.Option(help="Write prompts to the server log (off: they stay private).")
        ] = default_of(ServerSettings, "log_prompts"),
        allow_origin: Annotated[
            list[str] | None,
            typer.Option(
                "--allow-origin",
                help="A web origin whose pages may call the API, e.g. http://localhost:3000 "
                "('*' is a wildcard: http://localhost:*); repeatable. LLMKIT_ORIGINS adds a "
                "comma-separated list. The page at / needs none.",
            ),
        ] = None,
        engine_url: Annotated[
            str | None,
            typer.Option(
                help="Generate on a running OpenAI-compatible engine server (vLLM, llama-server, "
                "SGLang, another llmkit), e.g. http://127.0.0.1:8000; llmkit sends it templated "
                "prompts. LLMKIT_ENGINE_API_KEY is sent as its key."
            ),
        ] = None,
        tensor_parallel: Annotated[
            int,
            typer.Option(
                help="With --engine vllm: GPUs each layer is split over (vLLM's "
                "--tensor-parallel-size).",
                callback=at_least("--tensor-parallel", 1, "GPU"),
            ),
        ] = default_of(ServerSettings, "tensor_parallel"),
        pipeline_parallel: Annotated[
            int,
            typer.Option(
                help="With --engine vllm: pipeline stages the layers are cut into (vLLM's "
                "--pipeline-parallel-size).",
                callback=at_least("--pipeline-parallel", 1, "stage"),
            ),
        ] = default_of(ServerSettings, "pipeline_parallel"),
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
    ) -> None:
        """Serve models over an OpenAI- and Ollama-compatible HTTP API, with a web chat page at /."""
        require_module("fastapi", feature="llmkit serve", extra="serve")
        require_module("uvicorn", feature="llmkit serve", extra="serve")
        from llmkit.server.app import check_port, run_server
        from llmkit.server.security import ORIGINS_ENV, parse_origins
        from llmkit.server.state import check_exposure

        check_port(port)
        origins = parse_origins([*(allow_origin or []), os.environ.get(ORIGINS_ENV, "")])

        settings = ServerSettings(
            host=host,
            port=port,
            api_key=api_key or None,
            parallel=parallel,
            max_queue=queue,
            context_length=context,
            threads=threads,
            max_body_bytes=max_body,
            log_prompts=log_prompts,
            engine=engine,
            allowed_origins=origins,
            engine_url=engine_url,
            tensor_parallel=tensor_parallel,
            pipeline_parallel=pipeline_parallel,
        )
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
            say(
                "Serving [bold]{}[/] ({}) at [bold]{}[/] ({} slots). "
                "OpenAI: /v1, Ollama: /api, chat page: /",
                ", ".join(served),
                ", ".join(engines),
                f"http://{shown}:{port}",
                parallel,
                err=True,
            )
            if api_key:
                say("API key required: send 'Authorization: Bearer <key>'.", err=True)
            if origins:
                say("Web origins allowed: {}", ", ".join(origins), err=True)

        run_server(models or ["smollm2"], settings, on_ready=ready)


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
