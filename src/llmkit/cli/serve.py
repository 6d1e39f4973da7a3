"""`llmkit serve`: an OpenAI- and Ollama-compatible API and a web chat page on this machine."""

from __future__ import annotations

import os
from typing import Annotated

import typer

from llmkit.errors import require_module


def register(app: typer.Typer) -> None:
    @app.command()
    def serve(
        models: Annotated[
            list[str] | None,
            typer.Argument(help="Models to serve (default: the built-in smollm2)."),
        ] = None,
        host: Annotated[
            str, typer.Option(help="Address to listen on; anything but loopback needs an API key.")
        ] = "127.0.0.1",
        port: Annotated[int, typer.Option(help="Port to listen on.")] = 11435,
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
        ] = 4,
        queue: Annotated[
            int, typer.Option(help="Requests that may wait for a slot; past it: HTTP 503.")
        ] = 32,
        context: Annotated[
            int | None,
            typer.Option(help="Context length of each slot (default: the model's, at most 4096)."),
        ] = None,
        threads: Annotated[
            int | None, typer.Option(help="CPU threads (default: all cores).")
        ] = None,
        max_body: Annotated[int, typer.Option(help="Largest request body accepted, in bytes.")] = 4
        * 1024
        * 1024,
        log_prompts: Annotated[
            bool, typer.Option(help="Write prompts to the server log (off: they stay private).")
        ] = False,
        allow_origin: Annotated[
            list[str] | None,
            typer.Option(
                "--allow-origin",
                help="A web origin whose pages may call the API, e.g. http://localhost:3000 "
                "('*' is a wildcard: http://localhost:*); repeatable. LLMKIT_ORIGINS adds a "
                "comma-separated list. The page at / needs none.",
            ),
        ] = None,
    ) -> None:
        """Serve models over an OpenAI- and Ollama-compatible HTTP API, with a web chat page at /."""
        require_module("fastapi", feature="llmkit serve", extra="serve")
        require_module("uvicorn", feature="llmkit serve", extra="serve")
        from rich.console import Console

        from llmkit.server.app import check_port, run_server
        from llmkit.server.security import ORIGINS_ENV, parse_origins
        from llmkit.server.state import ServerSettings, check_exposure

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
            allowed_origins=origins,
        )
        check_exposure(settings)  # before loading anything: a refusal should be instant
        console = Console(stderr=True)

        def ready(state: object) -> None:
            shown = f"[{host}]" if ":" in host else host
            names = ", ".join(state.models)  # type: ignore[attr-defined]
            console.print(
                f"Serving [bold]{names}[/] at [bold]http://{shown}:{port}[/] ({parallel} slots). "
                "OpenAI: /v1, Ollama: /api, chat page: /",
                highlight=False,
            )
            if api_key:
                console.print(
                    "API key required: send 'Authorization: Bearer <key>'.", highlight=False
                )
            if origins:
                console.print(f"Web origins allowed: {', '.join(origins)}", highlight=False)

        run_server(models or ["smollm2"], settings, on_ready=ready)
