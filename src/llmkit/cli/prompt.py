"""`llmkit prompt` and `llmkit template`: what the model sees, its raw template, and the checker."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text
from typer.core import TyperGroup

from llmkit.cli import options as opt
from llmkit.cli.model_text import Mark, print_marked
from llmkit.cli.output import console, error_console, escape, print_json, print_table, print_text

if TYPE_CHECKING:
    # typer carries its own copy of click; its Context is the one a TyperGroup is given.
    from typer._click import Context as ClickContext

    from llmkit.chat.checker import CheckReport
    from llmkit.chat.inspect import InspectableModel, PromptView

SPECIAL_STYLE = "bold magenta"
SPECIAL_MARK = Mark(SPECIAL_STYLE)
NEWLINE_MARK = Mark("dim")
SEVERITY_STYLE = {
    "error": "bold red",
    "warning": "yellow",
    "info": "cyan",
    "pass": "green",
    "skipped": "dim",
}
SEVERITY_MARK = {"error": "✗", "warning": "!", "info": "i", "pass": "✓", "skipped": "-"}


# ---- the prompt view ---------------------------------------------------------------------------
def print_prompt_view(
    console: Console,
    model: InspectableModel,
    messages: list[dict[str, Any]],
    *,
    tokens: bool = False,
    tools: list[dict[str, Any]] | None = None,
) -> None:
    """Print the exact prompt a conversation becomes (the `/show` of `llmkit chat` uses this too)."""
    from llmkit.chat.inspect import build_prompt_view

    render_prompt_view(console, build_prompt_view(model, messages, tools=tools), tokens=tokens)


def render_prompt_view(console: Console, view: PromptView, *, tokens: bool = False) -> None:
    console.print(f"[bold]{escape(view.model)}[/] · template: {escape(view.template_description)}")
    console.rule(style="dim")
    print_marked(_marked(view), target=console, end="" if view.text.endswith("\n") else "\n")
    console.rule(style="dim")
    if tokens:
        console.print(_token_table(view))
    # Piped output has no colour, so the legend only mentions the colour in a terminal.
    legend = f"special tokens in [{SPECIAL_STYLE}]magenta[/], " if console.is_terminal else ""
    console.print(
        f"[bold]{len(view.tokens)}[/] tokens of a {view.context_length:,}-token context · "
        f"{legend}[dim]↵[/] marks a newline",
        highlight=False,
    )
    bos = view.bos
    if bos.token:
        console.print(f"BOS: {escape(bos.note)}", highlight=False)
    stops = ", ".join(f"{text} ({token_id})" for text, token_id in view.stop_tokens) or "none"
    end = view.end_of_turn or "none found"
    console.print(
        f"Stops at: {escape(stops)} · assistant turns end with {escape(end)}", highlight=False
    )
    for warning in view.warnings:
        console.print(f"[yellow]Warning:[/] {escape(warning)}", highlight=False)


def _marked(view: PromptView) -> list[tuple[str, Mark | None]]:
    """The prompt with special tokens styled and each newline shown as ↵ (in a pipe the token
    texts mark themselves, and the ↵ stays)."""
    runs: list[tuple[str, Mark | None]] = []
    for piece, special in view.segments():
        if special:
            runs.append((piece, SPECIAL_MARK))
            continue
        lines = piece.split("\n")
        for index, line in enumerate(lines):
            runs.append((line, None))
            if index < len(lines) - 1:
                runs.append(("↵", NEWLINE_MARK))
                runs.append(("\n", None))
    return runs


def _token_table(view: PromptView) -> Table:
    table = Table(box=None, header_style="bold", pad_edge=False)
    table.add_column("#", justify="right", style="dim")
    table.add_column("id", justify="right")
    table.add_column("piece")
    table.add_column("special")
    for index, token in enumerate(view.tokens):
        piece = json.dumps(token.piece, ensure_ascii=False)
        table.add_row(
            str(index),
            str(token.id),
            Text(piece, style=SPECIAL_STYLE if token.special else ""),
            "special" if token.special else "",
        )
    return table


def prompt_command(
    model: Annotated[str, typer.Argument(help="Model name from `llmkit list`, or a GGUF path.")],
    text: Annotated[
        str | None,
        typer.Argument(help="A user message, as `llmkit run` takes it (last, after any -m)."),
    ] = None,
    message: Annotated[
        list[str] | None,
        typer.Option(
            "--message",
            "-m",
            help="A message as ROLE:TEXT (user, assistant, system, tool); repeat for a conversation.",
        ),
    ] = None,
    system: opt.System = None,
    tools: Annotated[
        str | None, typer.Option("--tools", help="A JSON file of tool definitions.")
    ] = None,
    tokens: Annotated[
        bool, typer.Option("--tokens", help="Also list every token: id, piece, special.")
    ] = False,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print JSON (text, tokens, BOS, stops) for scripts.")
    ] = False,
    plain: Annotated[
        bool, typer.Option("--plain", help="Print only the exact text, nothing else.")
    ] = False,
    no_generation_prompt: Annotated[
        bool,
        typer.Option(
            "--no-generation-prompt",
            help="Render without the assistant header at the end (as for training).",
        ),
    ] = False,
    template: opt.Template = None,
    engine: opt.Engine = opt.DEFAULT_ENGINE,
    context: opt.Context = None,
) -> None:
    """Show exactly what MODEL is fed for a conversation: the text, special tokens marked, and tokens."""
    from llmkit.chat.inspect import build_prompt_view, load_tools, parse_message
    from llmkit.chat.template import template_argument
    from llmkit.errors import InvalidParameterError
    from llmkit.model import load

    messages = [parse_message(spec) for spec in message or []]
    if text is not None:
        messages.append({"role": "user", "content": text})
    if not messages:
        raise InvalidParameterError(
            'Give a message: llmkit prompt MODEL "Hello", or -m ROLE:TEXT for a conversation.'
        )
    tool_list = load_tools(tools) if tools else None
    chosen = template_argument(template) if template else None
    with load(model, engine=engine, context_length=context, template=chosen) as loaded:
        view = build_prompt_view(
            loaded,
            loaded.with_system(messages, system),
            tools=tool_list,
            add_generation_prompt=not no_generation_prompt,
        )
    if as_json:
        print_json(view.to_json())
    elif plain:
        print_text(view.text, final_newline=False)  # exactly the model's input
    else:
        render_prompt_view(console, view, tokens=tokens)


# ---- llmkit template ---------------------------------------------------------------------------
class _ShowByDefault(TyperGroup):
    """`llmkit template MODEL` means `llmkit template show MODEL`."""

    def parse_args(self, ctx: ClickContext, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ("--names", "--help", "-h"):
            args = ["show", *args]
        return super().parse_args(ctx, args)


template_app = typer.Typer(
    cls=_ShowByDefault,
    invoke_without_command=True,
    help="Show a model's chat template (`llmkit template MODEL`), list built-ins (--names), or check one.",
    epilog="Examples: llmkit template smollm2 · llmkit template check smollm2 · "
    "llmkit template check my.jinja --bos '<s>' --eos '</s>' · llmkit template --names",
    context_settings={"help_option_names": ["-h", "--help"]},
)


@template_app.callback()
def template_callback(
    ctx: typer.Context,
    names: Annotated[bool, typer.Option("--names", help="List the built-in templates.")] = False,
) -> None:
    if names:
        names_command(as_json=False)
        raise typer.Exit()
    if ctx.invoked_subcommand is None:
        typer.echo(ctx.get_help())
        raise typer.Exit()


@template_app.command("names")
def names_command(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """List the built-in templates and the special tokens that select each one."""
    from llmkit.chat.builtin_templates import BUILTINS

    if as_json:
        print_json(
            [
                {"name": b.name, "description": b.description, "markers": list(b.markers)}
                for b in BUILTINS.values()
            ]
        )
        return
    table = Table(box=None, header_style="bold", pad_edge=False)
    for column in ("name", "chosen when the vocabulary has", "format"):
        table.add_column(column)
    for builtin in BUILTINS.values():
        table.add_row(
            Text(builtin.name), Text(" ".join(builtin.markers)), Text(builtin.description)
        )
    print_table(table)
    console.print(
        "[dim]A model without a template gets the first whose tokens it has; "
        "`--template NAME` picks one.[/]"
    )


@template_app.command("show")
def show_command(
    target: Annotated[
        str,
        typer.Argument(
            metavar="MODEL_OR_FILE", help="A model, a .jinja/.json file, or a built-in name."
        ),
    ],
    template: Annotated[
        str | None, typer.Option("--template", help="Show this override instead.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Print the raw chat template a model renders with (say where it came from on stderr)."""
    from llmkit.chat.checker import load_subject
    from llmkit.chat.template import template_argument

    subject = load_subject(target, template=template_argument(template) if template else None)
    if as_json:
        print_json(
            {
                "target": subject.label,
                "source": subject.source,
                "description": subject.description,
                "template": subject.template,
            }
        )
        return
    error_console.print(f"[dim]# {escape(subject.label)}: {escape(subject.description)}[/]")
    if console.is_terminal:
        from rich.syntax import Syntax

        console.print(Syntax(subject.template, "jinja", word_wrap=True, background_color="default"))
    else:
        print_text(subject.template, final_newline=False)  # `> file` holds the template exactly


@template_app.command("check")
def check_command(
    target: Annotated[
        str,
        typer.Argument(
            metavar="MODEL_OR_FILE", help="A model, a .jinja/.json file, or a built-in name."
        ),
    ],
    template: Annotated[
        str | None,
        typer.Option(
            "--template", help="Check this template (name or file) with the model's tokens."
        ),
    ] = None,
    bos: Annotated[
        str | None, typer.Option("--bos", help="The BOS token, for a bare template file.")
    ] = None,
    eos: Annotated[
        str | None, typer.Option("--eos", help="The EOS token, for a bare template file.")
    ] = None,
    add_bos: Annotated[
        bool | None,
        typer.Option("--add-bos/--no-add-bos", help="Whether the tokenizer adds BOS itself."),
    ] = None,
    tools: Annotated[
        bool,
        typer.Option(
            "--tools", help="Tools will be used: a template that ignores them is an error."
        ),
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Check a chat template for problems; exits 1 when any finding is an error."""
    from llmkit.chat.checker import check_template, load_subject
    from llmkit.chat.template import template_argument

    subject = load_subject(
        target,
        template=template_argument(template) if template else None,
        bos_token=bos,
        eos_token=eos,
        add_bos_token=add_bos,
    )
    report = check_template(subject, tools_requested=tools)
    if as_json:
        print_json(report.to_json())
    else:
        render_check_report(console, report)
    if not report.ok:
        raise typer.Exit(1)


def render_check_report(console: Console, report: CheckReport) -> None:
    from llmkit.chat.checker import CHECKS

    console.print(
        f"[bold]{escape(report.subject)}[/] · template: {escape(report.description)}",
        highlight=False,
    )
    table = Table.grid(padding=(0, 2))
    for _ in range(3):
        table.add_column()
    for check in CHECKS:
        status = report.status(check)
        table.add_row(
            Text(f"{SEVERITY_MARK[status]} {status}", style=SEVERITY_STYLE[status]),
            Text(check),
            Text(report.summary(check)),  # the problem found, or what holds for a pass
        )
    print_table(table, target=console)  # piped: one line per check, never wrapped
    for finding in report.findings:
        style = SEVERITY_STYLE[finding.severity]
        console.print()
        console.print(
            f"[{style}]{finding.severity}[/] [bold]{escape(finding.title)}[/] ({escape(finding.check)})",
            highlight=False,
        )
        console.print(f"  {escape(finding.explanation)}", highlight=False)
        console.print(f"  [bold]Fix:[/] {escape(finding.fix)}", highlight=False)
    counts = {
        severity: sum(f.severity == severity for f in report.findings)
        for severity in ("error", "warning", "info")
    }
    console.print()
    console.print(
        f"{counts['error']} error(s), {counts['warning']} warning(s), {counts['info']} note(s)"
        + ("" if report.ok else " · [bold red]the template has errors[/]"),
        highlight=False,
    )


def register(app: typer.Typer) -> None:
    app.command("prompt")(prompt_command)
    app.add_typer(template_app, name="template")
