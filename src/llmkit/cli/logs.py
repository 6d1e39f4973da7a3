"""`llmkit logs`: the exchanges of `run`, `chat` and `agent`, kept on this machine."""

from __future__ import annotations

import datetime
from typing import Annotated, Any

import typer

from llmkit.cli import options as opt
from llmkit.cli.output import escape, print_json, print_table, print_text, say
from llmkit.errors import InvalidParameterError

NoLog = Annotated[
    bool, typer.Option("--no-log", help="Do not keep this exchange in `llmkit logs`.")
]


def log_exchange(
    kind: str,
    model: str,
    prompt: str,
    result: Any,
    *,
    conversation: str,
    system: str | None = None,
    params: Any = None,
    no_log: bool = False,
) -> None:
    """Keep one finished answer in the local log (unless turned off); a failure to log is a
    warning, never an error, since the answer was already given."""
    if no_log or result is None:
        return
    _keep(
        conversation=conversation, kind=kind, model=model, prompt=prompt, answer=result.text,
        system=system, parameters=params.to_json() if params is not None else {},
        prompt_tokens=result.usage.prompt_tokens,
        completion_tokens=result.usage.completion_tokens,
        seconds=round(result.timing.first_token_seconds + result.timing.generation_seconds, 4),
        finish_reason=result.finish_reason,
    )  # fmt: skip


def log_agent_run(model: str, task: str, result: Any, *, conversation: str) -> None:
    """Keep a finished agent run in the local log: the task, the answer and the tools it called."""
    calls = [{"tool": step.tool, "arguments": step.arguments} for step in result.steps if step.tool]
    _keep(
        conversation=conversation, kind="agent", model=model, prompt=task, answer=result.answer,
        parameters={"calls": calls, "stopped": result.stopped}, completion_tokens=result.tokens,
        seconds=round(result.seconds, 4), finish_reason=result.stopped,
    )  # fmt: skip


def _keep(**fields: Any) -> None:
    from llmkit.store.history import Exchange, record

    warning = record(Exchange(**fields))
    if warning:
        say("[yellow]{}[/]", warning, err=True)


logs_app = typer.Typer(
    help="List, search, show and delete logged exchanges; turn logging on or off.",
    invoke_without_command=True,
    no_args_is_help=False,
)


@logs_app.callback()
def logs(
    context: typer.Context,
    count: Annotated[
        int,
        typer.Option(
            "--count",
            "-n",
            help="How many to list, newest first.",
            callback=opt.at_least("--count", 1, "exchange"),
        ),
    ] = 20,
    query: Annotated[
        str | None, typer.Option("--query", "-q", help="Only exchanges containing these words.")
    ] = None,
    model: Annotated[str | None, typer.Option("--model", "-m", help="Only this model's.")] = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
) -> None:
    """Recent exchanges (`llmkit logs -q "light years"` searches them)."""
    if context.invoked_subcommand is not None:
        return
    from rich.table import Table

    from llmkit.store.history import History, logging_enabled

    found = History().recent(limit=count, query=query, model=model)
    if json_output:
        print_json([exchange.to_json() for exchange in found])
        return
    if not found:
        state = "" if logging_enabled() else " Logging is off (`llmkit logs on` turns it on)."
        say("No logged exchanges{}.{}", " match" if query or model else "", state)
        return
    table = Table(box=None)
    for header in ("id", "when", "model", "kind", "prompt", "answer"):
        table.add_column(header, overflow="ellipsis", no_wrap=header in ("prompt", "answer"))
    for exchange in found:
        table.add_row(
            str(exchange.id),
            _when(exchange.created),
            escape(exchange.model),
            exchange.kind,
            escape(_line(exchange.prompt)),
            escape(_line(exchange.answer)),
        )
    print_table(table)


def _exchange_ids(ids: list[int] | None) -> list[int] | None:
    # Ids count up from 1; a negative number is no id (and no "last N" either: say so at once).
    wrong = [value for value in ids or () if value < 1]
    if wrong:
        raise InvalidParameterError(
            f"{wrong[0]} is not an exchange id: ids are the numbers `llmkit logs` lists, from 1."
        )
    return ids


def _exchange_id(value: int) -> int:
    _exchange_ids([value])
    return value


# A negative number reaches the id check instead of reading as an unknown option.
ACCEPT_NEGATIVE = {"ignore_unknown_options": True}


@logs_app.command("show", context_settings=ACCEPT_NEGATIVE)
def show(
    exchange_id: Annotated[
        int, typer.Argument(help="The id from `llmkit logs`.", callback=_exchange_id)
    ],
    json_output: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
) -> None:
    """One exchange in full: prompt, answer, parameters, tokens and timing."""
    from llmkit.store.history import History

    exchange = History().get(exchange_id)
    if json_output:
        print_json(exchange.to_json())
        return
    say(
        "[bold]#{}[/] {} · {} · {} · conversation {}",
        exchange.id, _when(exchange.created), exchange.model, exchange.kind, exchange.conversation,
    )  # fmt: skip
    if exchange.system:
        say("[dim]system:[/] {}", exchange.system)
    say("[dim]prompt:[/]")
    print_text(exchange.prompt)
    say("[dim]answer:[/]")
    print_text(exchange.answer)
    tokens = f"{exchange.prompt_tokens} prompt + {exchange.completion_tokens} answer tokens"
    seconds = f", {exchange.seconds:.2f} s" if exchange.seconds is not None else ""
    say("[dim]{}{}, finish: {}[/]", tokens, seconds, exchange.finish_reason or "-")


@logs_app.command("rm", context_settings=ACCEPT_NEGATIVE)
def remove(
    exchange_ids: Annotated[
        list[int] | None,
        typer.Argument(help="Ids from `llmkit logs` to delete.", callback=_exchange_ids),
    ] = None,
    everything: Annotated[
        bool, typer.Option("--all", help="Delete every logged exchange.")
    ] = False,
) -> None:
    """Delete logged exchanges."""
    from llmkit.errors import LlmkitError
    from llmkit.store.history import History

    if not exchange_ids and not everything:
        raise InvalidParameterError(
            "Name the ids to delete (from `llmkit logs`), or pass --all to delete every exchange."
        )
    history = History()
    missing = []
    for exchange_id in () if everything else dict.fromkeys(exchange_ids or ()):
        try:
            history.get(exchange_id)
        except LlmkitError:
            missing.append(exchange_id)
    if missing and len(missing) == len(set(exchange_ids or ())):
        raise InvalidParameterError(
            f"There is no logged exchange {', '.join(map(str, missing))}; see `llmkit logs`."
        )
    gone = history.remove(exchange_ids or (), everything=everything)
    absent = f" (there is no logged exchange {', '.join(map(str, missing))})" if missing else ""
    say("Deleted {} exchange{}{}.", gone, "" if gone == 1 else "s", absent)


@logs_app.command("on")
def turn_on() -> None:
    """Log every exchange from now on (the default)."""
    from llmkit.store.history import set_logging

    set_logging(True)
    say("Logging is on: exchanges are kept in this machine's llmkit folder.")


@logs_app.command("off")
def turn_off() -> None:
    """Stop logging exchanges (those already logged stay until `llmkit logs rm`)."""
    from llmkit.store.history import set_logging

    set_logging(False)
    say("Logging is off.")


@logs_app.command("path")
def path() -> None:
    """Where the database is."""
    from llmkit.store.history import History

    print_text(str(History().path))


def _when(created: float) -> str:
    return datetime.datetime.fromtimestamp(created).strftime("%Y-%m-%d %H:%M")


def _line(text: str, limit: int = 60) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def register(app: typer.Typer) -> None:
    app.add_typer(logs_app, name="logs")
