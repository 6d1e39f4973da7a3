"""`llmkit next`: the model's next-token probabilities, one step or a walk of several."""

from __future__ import annotations

from dataclasses import asdict
from typing import TYPE_CHECKING, Annotated

import typer

from llmkit.cli import options as opt
from llmkit.cli.output import print_json, print_table, say

if TYPE_CHECKING:
    from llmkit.generation.scoring import TokenChance

BAR_WIDTH = 30


def shown_token(chance: TokenChance) -> str:
    """A token as text with its edges visible: a leading space as '␣', newlines as '\\n'."""
    text = chance.text.replace("\n", "\\n").replace("\t", "\\t")
    if text.startswith(" "):
        text = "␣" + text[1:]
    return text or "''"


def _table(distribution: list[TokenChance], chosen: int | None = None) -> None:
    from rich.table import Table

    table = Table(box=None, pad_edge=False, header_style="bold")
    for title, justify in (
        ("rank", "right"),
        ("token", "left"),
        ("id", "right"),
        ("prob", "right"),
        ("logprob", "right"),
        ("cumul.", "right"),
        ("", "left"),
    ):
        table.add_column(title, justify=justify)  # type: ignore[arg-type]
    total = 0.0
    for chance in distribution:
        total += chance.probability
        bar = (
            "█" * max(1, round(chance.probability * BAR_WIDTH))
            if chance.probability >= 0.005
            else "·"
        )
        mark = " [special]" if chance.special else ""
        pointer = " ←" if chance.id == chosen else ""
        table.add_row(
            str(chance.rank),
            shown_token(chance) + mark + pointer,
            str(chance.id),
            f"{100 * chance.probability:.2f}%",
            f"{chance.logprob:.3f}",
            f"{100 * total:.1f}%",
            bar,
        )
    print_table(table)


def next_command(
    model: Annotated[str, typer.Argument(help="Model name from `llmkit list`, or a GGUF path.")],
    text: Annotated[str, typer.Argument(help="The text to continue.")],
    top: Annotated[int, typer.Option("--top", "-k", help="How many tokens to list (1-100).")] = 10,
    chat: Annotated[
        bool, typer.Option("--chat", help="Put the text through the chat template first.")
    ] = False,
    steps: Annotated[
        int,
        typer.Option(
            "--steps", help="Walk this many tokens, showing each step's distribution (1-1000)."
        ),
    ] = 0,
    explain_sampling: Annotated[
        bool,
        typer.Option(
            "--explain-sampling",
            help="Show how --temperature, --top-k, --top-p and --min-p reshape the distribution, "
            "step by step, as the engine's sampler chain does it.",
        ),
    ] = False,
    json_output: Annotated[bool, typer.Option("--json", help="Print the figures as JSON.")] = False,
    temperature: opt.Temperature = None,
    top_k: opt.TopK = None,
    top_p: opt.TopP = None,
    min_p: opt.MinP = None,
    seed: opt.Seed = None,
    engine: opt.Engine = opt.DEFAULT_ENGINE,
    context: opt.Context = None,
    threads: opt.Threads = None,
    template: opt.Template = None,
    verbose: opt.Verbose = False,
) -> None:
    """Show the probability of each possible next token: what the model predicts, and how sure it is.

    With --steps N it walks N tokens (greedy by default, or sampled with --temperature, --top-k,
    --top-p, --min-p, --seed, through the engine's own sampler) and shows at each step the
    distribution, the token chosen and its rank.
    """
    from llmkit.errors import InvalidParameterError
    from llmkit.generation.scoring import MAX_TOP, next_tokens, walk
    from llmkit.generation.scoring import explain_sampling as explain

    if not 1 <= top <= MAX_TOP:
        raise InvalidParameterError(f"--top must be between 1 and {MAX_TOP} (got {top}).")
    if steps and not 1 <= steps <= 1000:
        raise InvalidParameterError(f"--steps must be between 1 and 1000 (got {steps}).")
    if explain_sampling and steps:
        raise InvalidParameterError("Use --explain-sampling or --steps, not both.")
    from llmkit.params import SamplingParams

    # Out-of-range values are refused before the model loads, even when unused.
    SamplingParams().updated(
        **opt.sampling_overrides(
            temperature=temperature, top_k=top_k, top_p=top_p, min_p=min_p, seed=seed
        )
    )
    loaded = opt.load_model(model, engine, context, threads, template, verbose)
    try:
        ids = loaded.next_prompt_ids(text, chat=chat)
        sampling = opt.sampling_overrides(
            temperature=temperature, top_k=top_k, top_p=top_p, min_p=min_p, seed=seed
        )
        params = loaded.params(**sampling)  # out-of-range values are refused even when unused
        if explain_sampling:
            views = explain(loaded.engine, ids, params, top)
            if json_output:
                print_json({"text": text, "stages": [asdict(view) for view in views]})
                return
            for view in views:
                title = "The model's distribution" if view.name == "model" else f"After {view.name}"
                say("\n[bold]{}[/]: {} tokens left", title, f"{view.remaining:,}")
                _table(view.top)
            return
        if not steps:
            distribution = next_tokens(loaded.engine, ids, top)
            if json_output:
                print_json(
                    {
                        "text": text,
                        "prompt_tokens": len(ids),
                        "next": [asdict(c) for c in distribution],
                    }
                )
            else:
                say("[dim]After {} prompt tokens, the next token is:[/]", len(ids), err=True)
                _table(distribution)
            return
        params = loaded.params(**({"temperature": 0.0} | sampling))
        walked = []
        continuation = []
        for number, step in enumerate(walk(loaded.engine, ids, params, steps, top), start=1):
            continuation.append(step.chosen.text)
            if json_output:
                walked.append(
                    {
                        "step": number,
                        "chosen": asdict(step.chosen),
                        "next": [asdict(c) for c in step.distribution],
                    }
                )
                continue
            say(
                "\n[bold]Step {}[/]: chose {} (rank {}, {})",
                number,
                shown_token(step.chosen),
                step.chosen.rank,
                f"{100 * step.chosen.probability:.2f}%",
            )
            _table(step.distribution, chosen=step.chosen.id)
        if json_output:
            print_json({"text": text, "prompt_tokens": len(ids), "steps": walked})
        else:
            say("\n[bold]Continuation:[/] {}", "".join(continuation))
    finally:
        loaded.close()


def register(app: typer.Typer) -> None:
    app.command("next", no_args_is_help=True)(next_command)
