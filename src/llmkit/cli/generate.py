"""`llmkit run` (one answer) and `llmkit chat` (an interactive conversation)."""

from __future__ import annotations

import contextlib
import sys
from typing import TYPE_CHECKING, Annotated

import typer

from llmkit.cli import options as opt
from llmkit.cli.output import console, error_console, print_error, print_json, say

if TYPE_CHECKING:
    from llmkit.chat.session import ChatSession
    from llmkit.generation.loop import GenerationResult, GenerationStream
    from llmkit.model import Model


def _stream_to_terminal(stream: GenerationStream) -> GenerationResult | None:
    """Print chunks as they come; mark where the model would have stopped (--ignore-eos)."""
    for chunk in stream:
        if chunk.text:
            sys.stdout.write(chunk.text)
            sys.stdout.flush()
        if chunk.would_stop_at:
            say("[reverse yellow]⟨would stop: {}⟩[/]", chunk.would_stop_at, end="")
    return stream.result


def _say_if_fallback_template(loaded: Model, template_option: str | None) -> None:
    """Tell the user when a built-in template stands in for a model that has none."""
    if (
        loaded.template
        and loaded.template.source.startswith("builtin:")
        and template_option is None
    ):
        say(
            "[yellow]{} has no chat template; using the built-in '{}' template "
            "(choose another with --template).[/]",
            loaded.name,
            loaded.template.source[8:],
            err=True,
        )


def run(
    model: Annotated[str, typer.Argument(help="Model name from `llmkit list`, or a GGUF path.")],
    prompt: Annotated[
        str | None, typer.Argument(help="The prompt; read from stdin when omitted.")
    ] = None,
    system: opt.System = None,
    raw: Annotated[
        bool, typer.Option("--raw", help="Plain completion: no chat template (for base models).")
    ] = False,
    json_output: Annotated[
        bool, typer.Option("--json", help="Print the answer with usage and timing as JSON.")
    ] = False,
    ignore_eos: Annotated[
        bool,
        typer.Option(
            "--ignore-eos",
            help="Keep going past the end-of-turn token, marking where the model would have stopped.",
        ),
    ] = False,
    temperature: opt.Temperature = None,
    top_k: opt.TopK = None,
    top_p: opt.TopP = None,
    min_p: opt.MinP = None,
    repeat_penalty: opt.RepeatPenalty = None,
    seed: opt.Seed = None,
    max_tokens: opt.MaxTokens = None,
    stop: opt.Stop = None,
    engine: opt.Engine = opt.DEFAULT_ENGINE,
    context: opt.Context = None,
    threads: opt.Threads = None,
    template: opt.Template = None,
    verbose: opt.Verbose = False,
) -> None:
    """Answer one prompt, streamed, using the model's own chat template."""
    from llmkit.errors import InvalidParameterError

    if prompt is None:
        if sys.stdin.isatty():
            raise InvalidParameterError(
                "Give a prompt, or pipe one in: echo 'Hi' | llmkit run MODEL"
            )
        prompt = sys.stdin.read()
    if not prompt.strip():
        raise InvalidParameterError("The prompt is empty.")
    overrides = opt.sampling_overrides(
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
        min_p=min_p,
        repeat_penalty=repeat_penalty,
        seed=seed,
        max_tokens=max_tokens,
        stop=stop,
        ignore_eos=ignore_eos or None,
    )
    loaded = opt.load_model(model, engine, context, threads, template, verbose)
    if raw:
        stream = loaded.stream_completion(prompt, **overrides)
    else:
        _say_if_fallback_template(loaded, template)
        messages = loaded.with_system([{"role": "user", "content": prompt}], system)
        stream = loaded.stream_chat(messages, **overrides)
    if json_output:
        for _ in stream:
            pass
        result = stream.result
        assert result is not None  # set when the iteration ends
        usage, timing = result.usage, result.timing
        print_json(
            {
                "model": loaded.name,
                "engine": loaded.engine.name,
                "text": result.text,
                "finish_reason": result.finish_reason,
                "stopped_by": result.stopped_by,
                "usage": {
                    "prompt_tokens": usage.prompt_tokens,
                    "completion_tokens": usage.completion_tokens,
                    "total_tokens": usage.total_tokens,
                },
                "timing": {
                    "time_to_first_token_s": round(timing.first_token_seconds, 4),
                    "generation_s": round(timing.generation_seconds, 4),
                    "prompt_tokens_per_s": round(timing.prompt_tokens_per_second(usage), 1),
                    "generation_tokens_per_s": round(timing.generation_tokens_per_second(usage), 1),
                },
                "params": stream.params.to_json(),
            }
        )
        return
    try:
        result = _stream_to_terminal(stream)
    except KeyboardInterrupt:
        sys.stdout.write("\n")
        raise typer.Exit(130) from None
    sys.stdout.write("\n")
    sys.stdout.flush()
    if result and result.finish_reason == "length":
        error_console.print("[dim](stopped: token limit reached)[/]")


CHAT_HELP = """Commands: /system TEXT  set the system prompt · /reset  forget the conversation ·
/show  the exact prompt the model sees next · /save FILE · /load FILE · /help · /bye (or Ctrl-D)
Ctrl-C stops an answer without leaving the chat."""


def chat(
    model: Annotated[
        str, typer.Argument(help="Model name (default: the built-in smollm2).")
    ] = "smollm2",
    system: opt.System = None,
    temperature: opt.Temperature = None,
    top_k: opt.TopK = None,
    top_p: opt.TopP = None,
    min_p: opt.MinP = None,
    repeat_penalty: opt.RepeatPenalty = None,
    seed: opt.Seed = None,
    max_tokens: opt.MaxTokens = None,
    stop: opt.Stop = None,
    engine: opt.Engine = opt.DEFAULT_ENGINE,
    context: opt.Context = None,
    threads: opt.Threads = None,
    template: opt.Template = None,
    verbose: opt.Verbose = False,
) -> None:
    """Talk to a model in the terminal, with its own chat template and stop tokens."""
    from llmkit.chat.session import ChatSession

    overrides = opt.sampling_overrides(
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
        min_p=min_p,
        repeat_penalty=repeat_penalty,
        seed=seed,
        max_tokens=max_tokens,
        stop=stop,
    )
    loaded = opt.load_model(model, engine, context, threads, template, verbose)
    session = ChatSession(loaded, system, loaded.params(**overrides))
    if loaded.template is None:
        loaded.render_prompt([])  # raises the clear "no chat template" error before the first turn
    _say_if_fallback_template(loaded, template)
    say(
        "[bold]{}[/] · {} · context {} tokens · /help for commands, Ctrl-D to leave",
        loaded.name,
        loaded.engine.name,
        f"{loaded.context_length:,}",
    )
    with contextlib.suppress(ImportError):
        import readline  # noqa: F401  (line editing and history for input())
    while True:
        try:
            line = input(">>> ")
        except EOFError:
            console.print()
            return
        except KeyboardInterrupt:
            console.print("\n[dim](Ctrl-D or /bye to leave)[/]")
            continue
        if not line.strip():
            continue
        if line.startswith("/"):
            if _chat_command(session, line.strip()):
                return
            continue
        _answer(session, line)


def _answer(session: ChatSession, text: str) -> None:
    from llmkit.errors import LlmkitError

    try:
        dropped = session.fit(text)
        if dropped:
            error_console.print(
                f"[yellow](the conversation outgrew the context window: the oldest "
                f"{dropped} message(s) were dropped; the system prompt is kept)[/]"
            )
        stream = session.ask(text)
    except LlmkitError as error:
        print_error(error)
        return
    except KeyboardInterrupt:  # while the prompt was being prepared: nothing was added
        error_console.print("\n[dim](stopped)[/]")
        return
    try:
        _stream_to_terminal(stream)
        sys.stdout.write("\n")
    except KeyboardInterrupt:
        sys.stdout.write("\n")
        error_console.print("[dim](stopped)[/]")
    session.record(stream.result)


def _chat_command(session: ChatSession, line: str) -> bool:
    """Handle a /command; return True to leave the chat."""
    from llmkit.errors import LlmkitError

    command, _, argument = line.partition(" ")
    argument = argument.strip()
    try:
        if command in ("/bye", "/exit", "/quit"):
            return True
        if command == "/help":
            console.print(CHAT_HELP)
        elif command == "/reset":
            session.reset()
            console.print("[dim](conversation cleared)[/]")
        elif command == "/system":
            session.system = argument or None
            console.print(f"[dim](system prompt {'set' if argument else 'cleared'})[/]")
        elif command == "/show":
            _show_next_prompt(session)
        elif command == "/save":
            if not argument:
                raise LlmkitError("Usage: /save FILE")
            say("[dim](saved to {})[/]", session.save(argument))
        elif command == "/load":
            if not argument:
                raise LlmkitError("Usage: /load FILE")
            say("[dim](loaded {} messages)[/]", session.load(argument))
        else:
            raise LlmkitError(f"Unknown command {command}; /help lists them.")
    except LlmkitError as error:
        print_error(error)
    return False


def _show_next_prompt(session: ChatSession) -> None:
    """The exact text the model sees next (the next user message goes where the prompt ends)."""
    from llmkit.cli.prompt import print_prompt_view

    print_prompt_view(console, session.model, session.conversation())


def register(app: typer.Typer) -> None:
    app.command("run")(run)
    app.command("chat")(chat)
