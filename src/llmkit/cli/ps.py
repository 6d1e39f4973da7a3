"""`llmkit ps` and `llmkit stop`: what a running server has loaded, and unloading a model."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Annotated

import typer

from llmkit.cli.options import default_of
from llmkit.cli.output import escape, human_size, print_json, print_table, say
from llmkit.server.control import check_port
from llmkit.server.state import ServerSettings

Host = Annotated[str, typer.Option(help="The server's address.")]
Port = Annotated[int, typer.Option(help="The server's port.", callback=check_port)]
ApiKey = Annotated[
    str | None,
    typer.Option(
        "--api-key", envvar="LLMKIT_API_KEY", show_envvar=True, help="The server's API key."
    ),
]
DEFAULT_HOST = default_of(ServerSettings, "host")
DEFAULT_PORT = default_of(ServerSettings, "port")


def until(expires_at: str, now: datetime | None = None) -> str:
    """'4 minutes from now', 'forever' or 'now' for an Ollama expires_at timestamp."""
    when = datetime.fromisoformat(expires_at.replace("Z", "+00:00"))
    if when.year >= 9999:
        return "forever"
    seconds = (when - (now or datetime.now(timezone.utc))).total_seconds()
    if seconds < 1:
        return "now"
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60), ("second", 1)):
        if seconds >= size:
            count = int(seconds // size)
            return f"{count} {unit}{'s' if count != 1 else ''} from now"
    return "now"


def register(app: typer.Typer) -> None:
    @app.command()
    def ps(
        host: Host = DEFAULT_HOST,
        port: Port = DEFAULT_PORT,
        api_key: ApiKey = None,
        json_output: Annotated[
            bool, typer.Option("--json", help="Print JSON for scripts.")
        ] = False,
    ) -> None:
        """The models a running `llmkit serve` has loaded: their memory and when they unload."""
        from llmkit.server.control import loaded_models, server_url

        models = loaded_models(server_url(host, port), api_key)
        if json_output:
            print_json(models)
            return
        if not models:
            say("No models are loaded.")
            return
        from rich.table import Table

        table = Table(box=None)
        for header in ("name", "memory", "until"):
            table.add_column(header)
        for entry in models:
            table.add_row(
                escape(entry["name"]), human_size(entry.get("size")), until(entry["expires_at"])
            )
        print_table(table)

    @app.command()
    def stop(
        name: Annotated[str, typer.Argument(help="The loaded model to unload.")],
        host: Host = DEFAULT_HOST,
        port: Port = DEFAULT_PORT,
        api_key: ApiKey = None,
    ) -> None:
        """Unload a model from a running `llmkit serve` (it loads again when next asked for)."""
        from llmkit.server.control import server_url, stop_model

        stop_model(server_url(host, port), name, api_key)
        say("Unloaded [bold]{}[/].", name)
