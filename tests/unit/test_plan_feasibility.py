"""What the planner suggests can run where it says, and `llmkit finetune` can train it as printed."""

from __future__ import annotations

import dataclasses
import re

import pytest
import typer

from llmkit.plan import PlanRequest, make_plan
from llmkit.plan.advice import largest_fitting_divisor
from llmkit.plan.feasibility import (
    FINETUNE_DEFAULTS,
    FINETUNE_METHODS,
    cuda_requirement,
    finetune_gap,
    runs_on,
)
from llmkit.plan.hardware import GIB, Device, resolve_device

SLIDE = PlanRequest(task="full", dtype="fp32", batch_size=32, seq_len=128)
CPU_24 = Device("CPU with 24GB", "cpu", 24 * GIB)
TRAINING_PLANS = [
    ("llama-3.2-1b", SLIDE, "T4"),
    ("llama-3.2-1b", SLIDE, CPU_24),
    ("llama-3.2-1b", dataclasses.replace(SLIDE, task="lora", dtype="bf16"), "cpu:8GB"),
    ("qwen2.5-7b", PlanRequest(task="lora", batch_size=4, seq_len=2048), "A10G"),
    ("smollm2-135m", PlanRequest(task="full", dtype="fp32", batch_size=64, seq_len=1024), "6GB"),
]


def test_finetune_rules_match_llmkit_finetune():
    from llmkit.train.config import METHODS, FinetuneConfig

    assert FINETUNE_METHODS == METHODS
    defaults = FinetuneConfig(base="b", data="d", out="o")
    for key, value in FINETUNE_DEFAULTS.items():
        assert getattr(defaults, key) == value, key


def test_bitsandbytes_needs_cuda():
    assert cuda_requirement("qlora") and cuda_requirement("full", "adamw8bit")
    assert cuda_requirement("lora") is None
    assert not runs_on("cpu", "qlora") and not runs_on("cpu", "full", "adamw8bit")
    assert runs_on("cuda", "qlora") and runs_on("cpu", "lora")


def test_cpu_plans_suggest_nothing_that_needs_cuda():
    plan = make_plan("llama-3.2-1b", SLIDE, CPU_24)
    assert plan.suggestions
    for item in plan.suggestions:
        assert item.request.task != "qlora", item.description
        assert item.request.optimizer != "adamw8bit", item.description
        assert "QLoRA" not in item.description and "8-bit" not in item.description


def test_a_cpu_qlora_plan_warns_that_it_cannot_run():
    plan = make_plan("llama-3.2-1b", PlanRequest(task="qlora"), CPU_24)
    assert any("needs a CUDA GPU" in warning for warning in plan.warnings)


def test_what_finetune_cannot_do_says_so_and_names_another_tool():
    plan = make_plan("llama-3.2-1b", SLIDE, "T4")
    qlora = [item for item in plan.suggestions if item.request.task == "qlora"]
    assert qlora and all(item.finetune is None for item in qlora)
    assert all("bitsandbytes" in (item.finetune_note or "") for item in qlora)
    runnable = [item for item in plan.suggestions if item.finetune]
    assert any(item.fits for item in runnable), "a T4 can LoRA-tune this with llmkit finetune"
    assert finetune_gap("lora", "adamw", "fp16", resolve_device("T4"))  # it trains in fp32 there


def _finetune_command() -> typer.main.TyperCommand:
    from llmkit.cli.app import app

    group = typer.main.get_command(app)
    return group.commands["finetune"]  # type: ignore[attr-defined]


@pytest.mark.parametrize(("model", "request_", "device"), TRAINING_PLANS)
def test_printed_finetune_flags_parse_and_validate(model, request_, device):
    from llmkit.train.config import FinetuneConfig

    command = _finetune_command()
    plan = make_plan(model, request_, device)
    assert plan.suggestions
    for item in plan.suggestions:
        if item.finetune is None:
            assert item.finetune_note, item.description
            continue
        context = command.make_context(
            "finetune", ["base", "--data", "d.jsonl", "--out", "o", *item.finetune]
        )
        params = context.params
        config = FinetuneConfig(
            base="base", data="d.jsonl", out="o", method=params["method"],
            batch_size=params["batch_size"], grad_accum=params["grad_accum"],
            max_length=params["max_length"], lora_r=params["lora_r"],
            lora_targets=params["lora_targets"], device=params["device"],
            gradient_checkpointing=params["gradient_checkpointing"],
        ).validated()  # fmt: skip
        assert config.method == item.request.task
        assert config.batch_size == item.request.batch_size
        assert config.batch_size * config.grad_accum == request_.batch_size
        assert config.max_length == item.request.seq_len
        assert config.gradient_checkpointing == item.request.grad_checkpointing


@pytest.mark.parametrize(("model", "request_", "device"), TRAINING_PLANS)
def test_smaller_batches_keep_the_requested_batch_exactly(model, request_, device):
    plan = make_plan(model, request_, device)
    for item in plan.suggestions:
        assert item.request.batch_size * item.accumulation == request_.batch_size, item.description
        match = re.search(
            r"batch size (\d+) with (\d+) gradient-accumulation steps", item.description
        )
        if match:
            assert int(match[1]) * int(match[2]) == request_.batch_size


def test_batch_suggestion_is_the_largest_divisor_that_fits():
    # 11 fits and 12 does not: 11 × 3 steps would be 33, so the answer is 8 × 4.
    assert largest_fitting_divisor(32, lambda value: value <= 11) == 8
    assert largest_fitting_divisor(32, lambda value: False) is None
    assert largest_fitting_divisor(7, lambda value: value < 7) == 1


def test_chart_bar_height_is_the_total_in_the_title():
    pytest.importorskip("matplotlib")
    import matplotlib.pyplot as plt

    from llmkit.plan.report import draw_chart

    for model, request_, device in TRAINING_PLANS[:2]:
        plan = make_plan(model, request_, device)
        figure = draw_chart(plan)
        axes = figure.axes[0]
        peak = [
            patch for patch in axes.patches if abs(patch.get_x() + patch.get_width() / 2) < 1e-9
        ]
        top = max(patch.get_y() + patch.get_height() for patch in peak)
        total = plan.estimate.total / GIB
        assert top == pytest.approx(total, rel=1e-9)
        assert sum(patch.get_height() for patch in peak) == pytest.approx(total, rel=1e-9)
        assert f"{total:.2f} GiB" in axes.get_title()
        assert all(patch.get_height() >= 0 for patch in axes.patches)
        plt.close(figure)


def test_doctor_and_plan_agree_a_cpu_cannot_qlora():
    from llmkit.plan.doctor import largest_models

    found = largest_models(CPU_24)
    assert found["qlora"] is None and found["lora"] is not None
    assert "--dtype fp32" in found["lora"]["command"]  # llmkit finetune's CPU precision
    assert largest_models(Device("24 GiB", "cuda", 24 * GIB))["qlora"] is not None
