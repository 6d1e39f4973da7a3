"""`llmkit run` (one answer) and `llmkit chat` (an interactive conversation)."""

from __future__ import annotations

import contextlib
import sys
from typing import TYPE_CHECKING, Annotated

import typer

from llmkit.cli import options as opt
from llmkit.cli.logs import NoLog, log_exchange
from llmkit.cli.output import console, error_console, print_error, print_json, say

if TYPE_CHECKING:
    from llmkit.chat.session import ChatSession
    from llmkit.generation.loop import GenerationResult, GenerationStream
    from llmkit.model import Model


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


def _prompt_with_stdin(prompt: str | None) -> str:
    """The prompt argument and any piped text, combined in the order simonw/llm and Ollama use:
    the piped text, a blank line, then the argument (`cat notes.txt | llmkit run M "Summarise"`)."""
    from llmkit.errors import InvalidParameterError

    piped = None if sys.stdin is None or sys.stdin.isatty() else sys.stdin.read()
    if piped is None and prompt is None:
        raise InvalidParameterError("Give a prompt, or pipe one in: echo 'Hi' | llmkit run MODEL")
    parts = [part for part in (piped, prompt) if part and part.strip()]
    if not parts:
        raise InvalidParameterError("The prompt is empty.")
    if len(parts) == 1:
        return parts[0]  # a prompt on its own is kept exactly as given
    return parts[0].rstrip() + "\n\n" + parts[1]


def _would_stop_marks(stream: GenerationStream) -> list[dict[str, object]]:
    """Run a stream to its end, noting each stop token the model produced (under --ignore-eos)
    and where in the answer text it came."""
    marks: list[dict[str, object]] = []
    length = 0
    for chunk in stream:
        length += len(chunk.text)
        if chunk.would_stop_at:
            marks.append({"offset": length, "token": chunk.would_stop_at})
    return marks


def run(
    model: Annotated[str, typer.Argument(help="Model name from `llmkit list`, or a GGUF path.")],
    prompt: Annotated[
        str | None,
        typer.Argument(
            help="The prompt. Piped text is read too, and comes first: "
            'cat notes.txt | llmkit run MODEL "Summarise".'
        ),
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
    no_log: NoLog = False,
) -> None:
    """Answer one prompt, streamed, using the model's own chat template."""
    from llmkit.cli.model_text import write_answer
    from llmkit.store.history import new_conversation

    asked = _prompt_with_stdin(prompt)

    def keep(result: GenerationResult | None) -> None:
        log_exchange(
            "run", loaded.name, asked, result, conversation=new_conversation(),
            system=system or loaded.system_prompt, params=stream.params, no_log=no_log,
        )  # fmt: skip

    prompt = asked
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
        would_stop = _would_stop_marks(stream)
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
                # --ignore-eos: where text mode shows ⟨would stop: …⟩ (offsets into "text").
                "would_stop_at": would_stop,
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
        keep(result)
        return
    try:
        result = write_answer(stream)
    except KeyboardInterrupt:
        sys.stdout.write("\n")
        raise typer.Exit(130) from None
    sys.stdout.write("\n")
    sys.stdout.flush()
    keep(result)
    if result and result.finish_reason == "length":
        error_console.print("[dim](stopped: token limit reached)[/]")


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
    no_log: NoLog = False,
    resume: Annotated[
        bool,
        typer.Option("--continue", "-c", help="Go on with the latest logged chat."),
    ] = False,
    conversation: Annotated[
        str | None,
        typer.Option("--conversation", help="Go on with this logged conversation (`llmkit logs`)."),
    ] = None,
) -> None:
    """Talk to a model in the terminal, with its own chat template and stop tokens."""
    from llmkit.chat.session import ChatSession
    from llmkit.cli import chat_commands
    from llmkit.cli.chat_terminal import read_message

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
    from llmkit.store.history import History, new_conversation

    conversation_id = new_conversation()
    if resume or conversation:
        earlier = History().conversation(conversation)
        conversation_id = earlier[0].conversation
        for exchange in earlier:
            session.messages += [
                {"role": "user", "content": exchange.prompt},
                {"role": "assistant", "content": exchange.answer},
            ]
        say(
            "[dim](going on with conversation {}: {} earlier turns)[/]",
            conversation_id,
            len(earlier),
        )
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
            if line.startswith("/"):
                if chat_commands.handle(session, line.strip()):
                    return
                continue
            text = read_message(line, input)
        except EOFError:
            console.print()
            return
        except KeyboardInterrupt:
            console.print("\n[dim](Ctrl-D or /bye to leave)[/]")
            continue
        if text.strip():
            result = _answer(session, text)
            log_exchange(
                "chat", loaded.name, text, result, conversation=conversation_id,
                system=session.system, params=session.params, no_log=no_log,
            )  # fmt: skip


def _answer(session: ChatSession, text: str) -> GenerationResult | None:
    from llmkit.cli.chat_terminal import prompt_progress, quiet_keyboard
    from llmkit.cli.model_text import AnswerWriter, write_answer
    from llmkit.errors import LlmkitError

    writer = AnswerWriter()
    with quiet_keyboard():
        try:
            dropped = session.fit(text)
            if dropped:
                error_console.print(
                    f"[yellow](the conversation outgrew the context window: the oldest "
                    f"{dropped} message(s) were dropped; the system prompt is kept)[/]"
                )
            with prompt_progress() as progress:
                stream = session.ask(text, progress=progress)
        except LlmkitError as error:
            print_error(error)
            return None
        except KeyboardInterrupt:  # while the prompt was being read: nothing was added
            error_console.print("\n[dim](stopped)[/]")
            return None
        try:
            write_answer(stream, writer)
            sys.stdout.write("\n")
        except KeyboardInterrupt:
            sys.stdout.write("\n")
            error_console.print("[dim](stopped)[/]")
    session.record(stream.result)
    return stream.result


def register(app: typer.Typer) -> None:
    app.command("run")(run)
    app.command("chat")(chat)
