"""`llmkit plan` (will it run, will it train, and why not) and `llmkit doctor` (what this machine can do)."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from llmkit.errors import InvalidParameterError


def plan(
    model: Annotated[
        str | None,
        typer.Argument(help="A store model, a GGUF file, an HF folder or a catalog name."),
    ] = None,
    task: Annotated[str, typer.Option("--task", "-t", help="chat, lora, qlora or full.")] = "chat",
    context: Annotated[
        int | None,
        typer.Option(help="chat: tokens in the KV cache (default: min(model max, 4096))."),
    ] = None,
    batch_size: Annotated[
        int, typer.Option("--batch-size", "-b", help="Sequences processed at once.")
    ] = 1,
    seq_len: Annotated[
        int, typer.Option("--seq-len", "-s", help="Training: tokens per sequence.")
    ] = 512,
    dtype: Annotated[
        str | None, typer.Option(help="fp32, bf16, fp16, int8, q8_0, q4_k_m (q4), nf4, ...")
    ] = None,
    optimizer: Annotated[
        str, typer.Option(help="adamw, adamw8bit or sgd (with momentum).")
    ] = "adamw",
    grad_checkpointing: Annotated[
        bool, typer.Option("--grad-checkpointing", help="Recompute activations in backward.")
    ] = False,
    lora_r: Annotated[int, typer.Option(help="LoRA rank.")] = 16,
    lora_targets: Annotated[
        str, typer.Option(help="all, attention, qv, mlp or a list like q,v,down.")
    ] = "all",
    device: Annotated[
        str,
        typer.Option(
            "--device",
            "-d",
            help="cpu, auto, T4, A10G, L4, A100-40, A100-80, H100, H200 or a size like 24GB.",
        ),
    ] = "cpu",
    engine: Annotated[
        str,
        typer.Option(
            help="chat: auto (llamacpp for quantized weights, else transformers), llamacpp or transformers."
        ),
    ] = "auto",
    tokens: Annotated[
        str | None,
        typer.Option(
            "--tokens", "--data-tokens", help="Training budget for this many tokens, e.g. 2T."
        ),
    ] = None,
    utilization: Annotated[
        float, typer.Option(help="Budget: fraction of the GPU's peak FLOPS achieved.")
    ] = 0.4,
    gpus: Annotated[int, typer.Option(help="Budget: number of GPUs.")] = 1,
    explain: Annotated[
        bool, typer.Option("--explain", help="Show the formula behind each line.")
    ] = False,
    json_output: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
    chart: Annotated[
        str | None, typer.Option(help="Draw the breakdown as a stacked bar (PNG).")
    ] = None,
    list_models: Annotated[
        bool, typer.Option("--list", help="List the bundled catalog and exit.")
    ] = False,
) -> None:
    """Will MODEL run or train here (or on that GPU)? Memory part by part, a verdict, and what would fit."""
    from llmkit.plan.memory import PlanRequest
    from llmkit.plan.planner import make_plan
    from llmkit.plan.report import render_plan, write_chart

    console = Console()
    if list_models:
        _print_catalog(console, json_output)
        return
    if model is None:
        raise InvalidParameterError(
            "Name a model to plan (see `llmkit plan --list`), e.g. `llmkit plan llama-3.2-1b`."
        )
    request = PlanRequest(
        task=task.lower(),
        dtype=dtype,
        batch_size=batch_size,
        seq_len=seq_len,
        context=context,
        optimizer=optimizer.lower(),
        grad_checkpointing=grad_checkpointing,
        lora_r=lora_r,
        lora_targets=lora_targets,
        engine=engine.lower(),
    )
    result = make_plan(
        model, request, device, tokens=tokens, utilization=utilization, device_count=gpus
    )
    chart_path = write_chart(result, chart) if chart else None
    if json_output:
        data = result.to_json()
        data["chart"] = str(chart_path) if chart_path else None
        typer.echo(json.dumps(data, indent=2))
        return
    render_plan(result, console, explain=explain)
    if chart_path:
        console.print(f"chart written to {chart_path}")


def _print_catalog(console: Console, json_output: bool) -> None:
    from llmkit.plan.catalog import catalog
    from llmkit.plan.report import format_count

    entries = list(catalog().values())
    if json_output:
        rows = [
            {
                "name": e.name,
                "display": e.display,
                "repo": e.repo,
                "parameters": e.spec().parameters,
            }
            for e in entries
        ]
        typer.echo(json.dumps(rows, indent=2))
        return
    table = Table(
        title="bundled model configs", show_edge=False, header_style="bold", title_justify="left"
    )
    for column in ("name", "model", "parameters", "context", "from"):
        table.add_column(column, justify="right" if column in ("parameters", "context") else "left")
    for entry in entries:
        spec = entry.spec()
        table.add_row(
            entry.name,
            entry.display,
            format_count(spec.parameters),
            f"{spec.max_context or 0:,}",
            entry.repo,
        )
    console.print(table)


def doctor(
    json_output: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
) -> None:
    """What this machine can do: CPU, RAM, disk, GPUs, PyTorch, llama.cpp, extras, and the largest models."""
    from llmkit.plan.doctor import run_doctor
    from llmkit.plan.memory import gib

    report = run_doctor()
    if json_output:
        typer.echo(json.dumps(report, indent=2))
        return
    console = Console()
    styles = {
        "ok": "[green]ok[/]",
        "info": "[cyan]··[/]",
        "warn": "[yellow]warn[/]",
        "fail": "[bold red]fail[/]",
    }
    table = Table(show_edge=False, header_style="bold", show_header=False)
    table.add_column("area", style="bold")
    table.add_column("status")
    table.add_column("detail", overflow="fold")
    for check in report["checks"]:
        # Details and fixes hold text such as 'llmkit[serve]' that rich would read as markup.
        detail = escape(check["detail"]) + (
            f"\n[dim]fix:[/] [bold]{escape(check['fix'])}[/]"
            if check["fix"] and check["status"] != "ok"
            else ""
        )
        table.add_row(check["area"], styles[check["status"]], detail)
    console.print(table)
    console.print(
        f"\n[bold]largest catalog models for {report['device']['name']}[/] (from `llmkit plan`):"
    )
    labels = {
        "chat": "chat (Q4_K_M, 4K context)",
        "lora": "LoRA (bf16, checkpointing)",
        "qlora": "QLoRA (4-bit, checkpointing)",
    }
    for key, label in labels.items():
        found = report["largest_models"][key]
        if found:
            text = f"{found['display']} ({found['model']}, {gib(found['total_bytes'])})"
        elif key == "qlora" and report["device"]["type"] == "cpu":
            text = "needs a CUDA GPU (bitsandbytes 4-bit)"
        else:
            text = "none of the catalog"
        console.print(f"  {label}: {text}")
    problems = report["problems"]
    console.print(
        f"\n{problems} problem{'s' if problems != 1 else ''} found."
        if problems
        else "\nNo problems found."
    )


def register(app: typer.Typer) -> None:
    app.command("plan")(plan)
    app.command("doctor")(doctor)
