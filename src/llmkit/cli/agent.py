"""`llmkit agent`: a model that calls your Python functions, each step shown as it happens."""

from __future__ import annotations

import importlib.util
import inspect
import json
import sys
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from llmkit.cli import options as opt
from llmkit.cli.logs import NoLog, log_agent_run
from llmkit.cli.output import error_console, print_json, print_text, say
from llmkit.errors import InvalidParameterError

if TYPE_CHECKING:
    from llmkit.agent import Agent, AgentResult, Step


def load_functions(spec: str) -> list[Any]:
    """The functions named by `path/to/tools.py[:fn,fn]` (all public functions defined there)."""
    path_text, names = spec, None
    head, sep, tail = spec.rpartition(":")
    if sep and head and not Path(spec).exists():
        path_text, names = head, [name.strip() for name in tail.split(",") if name.strip()]
    path = Path(path_text)
    if path.suffix != ".py" or not path.is_file():
        raise InvalidParameterError(f"--tools needs a Python file (tools.py[:fn,fn]): {path_text}.")
    module_spec = importlib.util.spec_from_file_location(f"llmkit_user_tools_{path.stem}", path)
    assert module_spec is not None and module_spec.loader is not None
    module = importlib.util.module_from_spec(module_spec)
    try:
        module_spec.loader.exec_module(module)
    except Exception as error:  # the user's own file: say what went wrong in it, in one line
        raise InvalidParameterError(
            f"{path} could not be imported: {type(error).__name__}: {error}"
        ) from None
    defined = {
        name: value
        for name, value in vars(module).items()
        if inspect.isfunction(value) and value.__module__ == module.__name__
    }
    if names is None:
        chosen = [value for name, value in defined.items() if not name.startswith("_")]
        if not chosen:
            raise InvalidParameterError(f"{path} defines no public functions to use as tools.")
        return chosen
    missing = [name for name in names if name not in defined]
    if missing:
        raise InvalidParameterError(
            f"{path} has no function {', '.join(missing)}; it defines: {', '.join(defined) or 'none'}."
        )
    return [defined[name] for name in names]


def _show_step(step: Step) -> None:
    if step.tool is None:
        return
    arguments = ", ".join(
        f"{k}={json.dumps(v, ensure_ascii=False)}" for k, v in step.arguments.items()
    )
    say(
        "[cyan]→ {}[/]({}) [dim]{} s, {} tokens[/]",
        step.tool,
        arguments,
        f"{step.seconds:.1f}",
        step.tokens,
        err=True,
    )
    if step.error is not None:
        say("  [red]✗ {}[/]", step.error, err=True)
    else:
        result = step.result or ""
        shown = result if len(result) <= 300 else result[:300] + "…"
        say("  [green]=[/] {}", shown, err=True)


def _trace(result: AgentResult) -> dict[str, Any]:
    return {
        "answer": result.answer,
        "stopped": result.stopped,
        "note": result.note,
        "tokens": result.tokens,
        "seconds": round(result.seconds, 3),
        "steps": [
            {
                "tool": step.tool,
                "arguments": step.arguments,
                "result": step.result,
                "error": step.error,
                "text": step.text,
                "tokens": step.tokens,
                "cached_tokens": step.cached_tokens,
                "seconds": round(step.seconds, 3),
            }
            for step in result.steps
        ],
        "messages": result.messages,
    }


def _record(path: Path, agent: Agent, result: AgentResult) -> None:
    """Append the run as a training conversation (the format `llmkit finetune` reads)."""
    conversation = {
        "messages": result.messages,
        "tools": agent.specs,  # what the model was shown, final_answer included
    }
    with path.open("a", encoding="utf-8") as out:
        out.write(json.dumps(conversation, ensure_ascii=False) + "\n")


def _run_one(
    agent: Agent, task: str, json_output: bool, record: Path | None, log: Callable[..., None]
) -> AgentResult:
    from llmkit.agent import AgentResult

    result: AgentResult | None = None
    with error_console.status("Thinking…") as status:
        for event in agent.stream(task):
            if isinstance(event, AgentResult):
                result = event
            elif not json_output:
                status.stop()
                _show_step(event)
                status.start()
    assert result is not None
    log(task, result)
    if record is not None:
        _record(record, agent, result)
    if json_output:
        print_json(_trace(result))
    else:
        if result.note:
            say("[yellow]{}[/]", result.note, err=True)
        print_text(result.answer)  # the answer as written: no tab expansion or wrapping
    return result


def agent(
    model: Annotated[str, typer.Argument(help="Model name from `llmkit list`, or a GGUF path.")],
    task: Annotated[
        str | None, typer.Argument(help="The task; without it, an interactive agent chat.")
    ] = None,
    tools: Annotated[
        list[str] | None,
        typer.Option(
            "--tools",
            help="A Python file of tool functions, optionally with names: tools.py:fn,fn "
            "(repeatable). Each function needs type hints; its docstring's Args: describe them.",
        ),
    ] = None,
    mcp: Annotated[
        list[str] | None,
        typer.Option(
            "--mcp",
            help='An MCP server\'s tools: a command that starts it on stdio ("python server.py") '
            "or its streamable-HTTP URL (repeatable).",
        ),
    ] = None,
    system: opt.System = None,
    max_steps: Annotated[
        int, typer.Option("--max-steps", help="Tool calls before a best-effort answer (1-100).")
    ] = 8,
    confirm: Annotated[bool, typer.Option("--confirm", help="Ask before each tool call.")] = False,
    require_tool: Annotated[
        bool,
        typer.Option(
            "--require-tool/--allow-direct-answer",
            help="The first reply must call one of the tools (default), or may answer at once.",
        ),
    ] = True,
    json_output: Annotated[
        bool,
        typer.Option("--json", help="Print the whole trace (steps, tokens, messages) as JSON."),
    ] = False,
    record: Annotated[
        Path | None,
        typer.Option(
            "--record", help="Append each finished run to this JSONL file as training data."
        ),
    ] = None,
    max_tokens: opt.MaxTokens = None,
    temperature: opt.Temperature = None,
    engine: opt.Engine = opt.DEFAULT_ENGINE,
    context: opt.Context = None,
    threads: opt.Threads = None,
    template: opt.Template = None,
    verbose: opt.Verbose = False,
    no_log: NoLog = False,
) -> None:
    """Answer a task by calling your Python functions; each call and its result is shown live.

    Every reply of the model is a well-formed call to one of the tools (or to final_answer),
    enforced by a grammar, so even a small local model cannot break the format.
    """
    from llmkit.agent import Agent

    if not tools and not mcp:
        raise InvalidParameterError(
            'Give the agent tools: --tools path/to/tools.py[:fn,fn] or --mcp "server command".'
        )
    functions: list[Any] = [function for spec in tools or [] for function in load_functions(spec)]
    ask = None
    if confirm:

        def ask(name: str, arguments: dict[str, Any]) -> bool:
            shown = json.dumps(arguments, ensure_ascii=False)
            return typer.confirm(f"Call {name}({shown})?", default=False, err=True)

    with ExitStack() as cleanup:
        # Each MCP session (and the server it started) ends with the command, however it ends.
        for server in mcp or []:
            from llmkit.agent.mcp_client import mcp_tools

            functions.extend(cleanup.enter_context(mcp_tools(server)))
        loaded = opt.load_model(model, engine, context, threads, template, verbose)
        cleanup.callback(loaded.close)
        params = opt.sampling_overrides(max_tokens=max_tokens, temperature=temperature)
        worker = Agent(
            loaded,
            functions,
            system=system,
            max_steps=max_steps,
            confirm=ask,
            require_tool=require_tool,
            **params,
        )
        from llmkit.store.history import new_conversation

        conversation = new_conversation()

        def log(asked: str, result: AgentResult) -> None:
            if not no_log:
                log_agent_run(loaded.name, asked, result, conversation=conversation)

        if task is not None:
            _run_one(worker, task, json_output, record, log)
            return
        _interactive(worker, json_output, record, log)


def _interactive(
    worker: Agent, json_output: bool, record: Path | None, log: Callable[..., None]
) -> None:
    say(
        "[dim]An agent with {} tools. /tools lists them, /trace shows the last run, /bye leaves.[/]",
        len(worker.tools),
        err=True,
    )
    last = None
    while True:
        try:
            line = input(">>> ").strip()
        except EOFError:
            return
        if not line:
            continue
        if line in ("/bye", "/exit", "/quit"):
            return
        if line == "/tools":
            for item in worker.tools.values():
                say("[bold]{}[/] {}", item.name, item.description)
            continue
        if line == "/trace":
            if last is None:
                say("[dim]No run yet.[/]", err=True)
            else:
                print_json(_trace(last))
            continue
        if line.startswith("/"):
            say("[yellow]Unknown command {}; try /tools, /trace or /bye.[/]", line, err=True)
            continue
        try:
            last = _run_one(worker, line, json_output, record, log)
        except KeyboardInterrupt:
            say("[dim]Stopped.[/]", err=True)
        sys.stdout.flush()


def register(app: typer.Typer) -> None:
    app.command(no_args_is_help=True)(agent)
