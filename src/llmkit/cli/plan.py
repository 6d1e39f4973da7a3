"""`llmkit plan` (will it run, will it train, and why not) and `llmkit doctor` (what this machine can do)."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table
from rich.text import Text

from llmkit.cli import options as opt
from llmkit.cli.output import console, escape, print_json, print_table, say
from llmkit.errors import InvalidParameterError


def plan(
    model: Annotated[
        str | None,
        typer.Argument(help="A store model, a GGUF file, an HF folder or a catalog name."),
    ] = None,
    task: Annotated[str, typer.Option("--task", "-t", help="chat, lora, qlora or full.")] = "chat",
    context: opt.Context = None,
    batch_size: Annotated[
        int,
        typer.Option(
            "--batch-size",
            "-b",
            help="Sequences processed at once.",
            callback=opt.at_least("--batch-size", 1, "sequence"),
        ),
    ] = 1,
    seq_len: Annotated[
        int,
        typer.Option(
            "--seq-len",
            "-s",
            help="Training: tokens per sequence.",
            callback=opt.at_least("--seq-len", 1, "token"),
        ),
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
    lora_r: Annotated[
        int, typer.Option(help="LoRA rank.", callback=opt.at_least("--lora-r", 1))
    ] = 16,
    lora_targets: Annotated[
        str, typer.Option(help="all, attention, qv, mlp or a list like q,v,down.")
    ] = "all",
    fsdp: Annotated[
        int,
        typer.Option(
            "--fsdp",
            help="Training: shard weights, gradients and optimizer state over N processes "
            "(FSDP); memory is then per process.",
            callback=opt.at_least("--fsdp", 1, "process"),
        ),
    ] = 1,
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
        float,
        typer.Option(
            help="Budget: fraction of the GPU's peak FLOPS achieved.",
            callback=opt.fraction("--utilization"),
        ),
    ] = 0.4,
    gpus: Annotated[
        int,
        typer.Option(help="Budget: number of GPUs.", callback=opt.at_least("--gpus", 1, "GPU")),
    ] = 1,
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
    from llmkit.plan.report import plan_report, write_chart

    if list_models:
        _print_catalog(json_output)
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
        fsdp=fsdp,
        engine=engine.lower(),
    )
    result = make_plan(
        model, request, device, tokens=tokens, utilization=utilization, device_count=gpus
    )
    chart_path = write_chart(result, chart) if chart else None
    if json_output:
        data = result.to_json()
        data["chart"] = str(chart_path) if chart_path else None
        print_json(data)
        return
    for part in plan_report(result, explain=explain, model=model):
        if isinstance(part, Table):
            print_table(part)
        else:
            console.print(part)
    if chart_path:
        say("chart written to {}", chart_path)


def _print_catalog(json_output: bool) -> None:
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
        print_json(rows)
        return
    table = Table(
        title="bundled model configs", show_edge=False, header_style="bold", title_justify="left"
    )
    for column in ("name", "model", "parameters", "context", "from"):
        table.add_column(column, justify="right" if column in ("parameters", "context") else "left")
    for entry in entries:
        spec = entry.spec()
        table.add_row(
            Text(entry.name),
            Text(entry.display),
            format_count(spec.parameters),
            f"{spec.max_context or 0:,}",
            Text(entry.repo),
        )
    print_table(table)


def doctor(
    json_output: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
) -> None:
    """What this machine can do: CPU, RAM, disk, GPUs, PyTorch, llama.cpp, extras, and the largest models."""
    from llmkit.plan.doctor import run_doctor
    from llmkit.plan.feasibility import cuda_requirement, finetune_dtype
    from llmkit.plan.hardware import Device
    from llmkit.plan.memory import gib

    report = run_doctor()
    if json_output:
        print_json(report)
        return
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
        table.add_row(escape(check["area"]), styles[check["status"]], detail)
    console.print(table)
    say("\n[bold]largest catalog models for {}[/], planned by:", report["device"]["name"])
    labels = {
        "chat": "chat (Q4_K_M, 4K context)",
        "lora": f"LoRA ({finetune_dtype(Device(**report['device']))}, checkpointing)",
        "qlora": "QLoRA (4-bit, checkpointing)",
    }
    for key, label in labels.items():
        found = report["largest_models"][key]
        needs = None if report["device"]["type"] == "cuda" else cuda_requirement(key)
        if found:
            text = f"{found['display']} ({found['model']}, {gib(found['total_bytes'])})"
            text += f"\n    see: {found['command']}"
        elif needs:
            text = needs
        else:
            text = "none of the catalog"
        say("  {}: {}", label, text)
    problems = report["problems"]
    console.print(
        f"\n{problems} problem{'s' if problems != 1 else ''} found."
        if problems
        else "\nNo problems found."
    )


def register(app: typer.Typer) -> None:
    app.command("plan")(plan)
    app.command("doctor")(doctor)
