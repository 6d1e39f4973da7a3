"""How a plan is shown: a rich table in the terminal, and a stacked bar chart as a PNG."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import RenderableType
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from llmkit.errors import InvalidParameterError, require_module
from llmkit.plan.commands import command_line, plan_arguments
from llmkit.plan.memory import gib
from llmkit.plan.planner import Plan

_VERDICT_STYLE = {"fits": "bold green", "tight": "bold yellow", "does not fit": "bold red"}


def format_count(value: float) -> str:
    for scale, suffix in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "K")):
        if value >= scale:
            return f"{value / scale:.2f} {suffix}"
    return f"{value:.0f}"


def format_duration(seconds: float) -> str:
    for scale, unit in ((365 * 86400, "years"), (86400, "days"), (3600, "hours"), (60, "minutes")):
        if seconds >= scale:
            return f"{seconds / scale:.1f} {unit}"
    return f"{seconds:.0f} seconds"


def _summary(plan: Plan) -> Text:
    spec, request = plan.spec, plan.estimate.request
    text = Text()
    text.append(f"{spec.name}", style="bold")
    text.append(
        f"  {format_count(spec.parameters)} parameters ({spec.parameters:,})"
        f"{f', {format_count(spec.active_parameters)} active' if spec.experts else ''}"
        f" · {spec.layers} layers · hidden {spec.hidden_size} · {spec.heads} heads / {spec.kv_heads} KV"
        f" · vocab {spec.vocab_size:,}{' · tied embeddings' if spec.tied_embeddings else ''}\n",
    )
    if request.task == "chat":
        shape = f"context {request.context:,} · batch {request.batch_size} · engine {plan.estimate.engine}"
    else:
        shape = f"batch {request.batch_size} × {request.seq_len:,} tokens · {request.optimizer}"
        if request.grad_checkpointing:
            shape += " · gradient checkpointing"
        if request.task in ("lora", "qlora"):
            shape += f" · LoRA r={request.lora_r} on {request.lora_targets}"
            shape += f" ({format_count(plan.estimate.trainable_parameters)} trainable)"
        if request.fsdp > 1:
            shape += f" · FSDP over {request.fsdp} processes (memory per process)"
    text.append(f"task {request.task} · {request.dtype} · {shape}\n", style="dim")
    text.append(f"source {spec.source}", style="dim")
    return text


def memory_table(plan: Plan, explain: bool = False) -> Table:
    table = Table(show_edge=False, header_style="bold")
    table.add_column("part")
    table.add_column("memory", justify="right")
    table.add_column("share", justify="right")
    if explain:
        table.add_column("formula", overflow="fold")
    total = plan.estimate.total
    for part in plan.estimate.parts:
        if abs(part.bytes) < 1 and part.key == "overlap":
            continue
        share = f"{100 * part.bytes / total:.0f}%" if total else ""
        formula = [Text(part.formula)] if explain else []
        table.add_row(Text(part.label), gib(part.bytes), share, *formula)
    style = _VERDICT_STYLE[plan.verdict.status]
    device = plan.device
    blank = [""] if explain else []
    table.add_section()
    table.add_row("[bold]total (peak)[/]", f"[bold]{gib(total)}[/]", "", *blank)
    table.add_row(
        Text(device.name),
        gib(device.memory_bytes),
        f"[{style}]{100 * plan.verdict.usage:.0f}%[/]",
        *blank,
    )
    return table


def suggestion_table(plan: Plan) -> Table:
    training = plan.estimate.request.task != "chat"
    table = Table(
        title="what would make it fit", show_edge=False, header_style="bold", title_justify="left"
    )
    table.add_column("change")
    table.add_column("new total", justify="right")
    table.add_column("fits", justify="center")
    if training:
        table.add_column("with llmkit finetune", overflow="fold")
    for item in plan.suggestions:
        how = []
        if training:
            how = [
                Text(" ".join(item.finetune))
                if item.finetune
                else Text(item.finetune_note or "", style="dim")
            ]
        table.add_row(
            Text(item.description),
            gib(item.total),
            "[green]yes[/]" if item.fits else "[red]no[/]",
            *how,
        )
    return table


def check_command(plan: Plan, model: str) -> str | None:
    """The `llmkit plan` command that shows the first fitting suggestion in full."""
    best = next((item for item in plan.suggestions if item.fits), None)
    if best is None:
        return None
    return command_line("plan", plan_arguments(model, best.request, plan.device))


def budget_text(plan: Plan) -> Text:
    budget = plan.budget
    assert budget is not None
    text = Text("training budget\n", style="bold")
    text.append(
        f"{format_count(budget.tokens)} tokens for {format_count(budget.parameters)} parameters = "
        f"{budget.tokens_per_parameter:,.1f} tokens per parameter (Chinchilla's compute-optimal: ~20)\n"
    )
    text.append(f"compute ≈ {budget.flops:.2e} FLOPs ({budget.flops_formula})\n")
    if budget.seconds is None:
        text.append(
            f"time: unknown ({budget.device.name} has no listed peak; name a GPU with --device)"
        )
    else:
        gpus = f"{budget.device_count} × " if budget.device_count > 1 else ""
        text.append(
            f"time ≈ {format_duration(budget.seconds)} on {gpus}{budget.device.name} "
            f"({budget.device.tflops:g} TFLOPS peak at {100 * budget.utilization:.0f}% utilisation)"
        )
    return text


def plan_report(
    plan: Plan, *, explain: bool = False, model: str | None = None
) -> list[RenderableType]:
    """What `llmkit plan` prints, in order: the caller prints each part (tables at full width).

    MODEL is what the user typed, so the printed command names the model the same way.
    """
    style = _VERDICT_STYLE[plan.verdict.status]
    parts: list[RenderableType] = [
        _summary(plan),
        memory_table(plan, explain),
        Text.assemble(
            ("verdict: ", "bold"),
            (plan.verdict.status, style),
            f" — {gib(plan.estimate.total)} of {gib(plan.device.memory_bytes)} on {plan.device.name}",
        ),
    ]
    parts += [f"[yellow]warning:[/] {escape(warning)}" for warning in plan.warnings]
    if plan.suggestions:
        parts.append(suggestion_table(plan))
        command = check_command(plan, model or plan.spec.name)
        if command:
            parts.append(Text.assemble(("see it in full: ", "bold"), command))
    if plan.budget:
        parts.append(budget_text(plan))
    return parts


# The parts that are not all alive at once: the peak holds only the largest phase of them.
_PHASED = ("gradients", "activations", "logits")


def chart_bars(plan: Plan) -> list[tuple[int, str, float, bool]]:
    """(x, label, bytes, hatched) per bar segment. The bar at x=0 stacks what is alive at the peak,
    so its height is the total; the parts that are not all alive at once are drawn beside it."""
    estimate = plan.estimate
    overlap = estimate.part("overlap")
    bars: list[tuple[int, str, float, bool]] = []
    if overlap < 0:
        phased = sum(estimate.part(key) for key in _PHASED) + overlap
        for part in estimate.parts:
            if part.key in _PHASED or part.key == "overlap":
                if part.key == "gradients":  # where the phased parts sit in the table
                    bars.append((0, "gradients, activations, logits at the peak", phased, False))
            elif part.bytes > 0:
                bars.append((0, part.label, part.bytes, False))
        bars += [
            (1, part.label, part.bytes, True)
            for part in estimate.parts
            if part.key in _PHASED and part.bytes > 0
        ]
        return bars
    return [(0, part.label, part.bytes, False) for part in estimate.parts if part.bytes > 0]


def draw_chart(plan: Plan) -> Any:
    """A matplotlib figure: the bar at the peak (its height is the total in the title), the parts
    that are not all alive at once beside it, and the device's memory as a line."""
    require_module("matplotlib", feature="--chart", extra="plot")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    gib_scale = 1024**3
    figure, axes = plt.subplots(figsize=(7, 5))
    stacks: dict[int, float] = {}
    for x, label, value, hatched in chart_bars(plan):
        height = value / gib_scale
        axes.bar(
            x,
            height,
            bottom=stacks.get(x, 0.0),
            label=f"{label} ({gib(value)})",
            **({"hatch": "//", "alpha": 0.5} if hatched else {}),
        )
        stacks[x] = stacks.get(x, 0.0) + height
    axes.axhline(
        plan.device.memory_bytes / gib_scale, color="red", linestyle="--", label=plan.device.name
    )
    ticks = [f"{plan.spec.name}\n{plan.estimate.request.task}, {plan.estimate.request.dtype}"]
    if 1 in stacks:
        ticks.append("listed parts\n(not all alive at once)")
    axes.set_xticks(range(len(ticks)), ticks)
    axes.set_ylabel("GiB")
    axes.set_title(f"peak {gib(plan.estimate.total)}: {plan.verdict.status}")
    axes.legend(loc="upper left", bbox_to_anchor=(1.02, 1), fontsize="small")
    figure.tight_layout()
    return figure


def write_chart(plan: Plan, path: str | Path) -> Path:
    """The chart of draw_chart as a PNG, SVG or PDF file."""
    target = Path(path)
    if target.suffix.lower() not in (".png", ".svg", ".pdf"):
        raise InvalidParameterError(
            f"--chart needs a .png, .svg or .pdf file name, not '{target.name}'."
        )
    figure = draw_chart(plan)
    import matplotlib.pyplot as plt

    target.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(target, dpi=120, bbox_inches="tight")
    plt.close(figure)
    return target
