"""`llmkit plan --fsdp N`: the sharded parts are divided by N, the gathered layers added once."""

from __future__ import annotations

import json

import pytest
import typer
from typer.testing import CliRunner

from llmkit.cli.plan import register
from llmkit.errors import InvalidParameterError
from llmkit.plan.catalog import catalog
from llmkit.plan.commands import plan_arguments
from llmkit.plan.hardware import resolve_device
from llmkit.plan.memory import PlanRequest, estimate_memory

SHARDED = ("weights", "gradients", "optimizer")


@pytest.mark.parametrize("task", ["full", "lora"])
def test_sharded_parts_are_divided_by_the_process_count(task: str) -> None:
    spec = catalog()["llama-3.2-1b"].spec()
    request = PlanRequest(task=task, dtype="bf16", batch_size=2, seq_len=256, device_type="cuda")
    one = estimate_memory(spec, request)
    four = estimate_memory(spec, PlanRequest(**{**request.__dict__, "fsdp": 4}))
    for key in SHARDED:
        assert four.part(key) == pytest.approx(one.part(key) / 4), key
    # Activations are per process whatever the sharding.
    assert four.part("activations") == one.part("activations")
    # The root's weights and two layers are whole while they run.
    root = spec.embedding_parameters() + spec.output_parameters() + spec.norm_parameters()
    gathered_weights = (root + 2 * spec.layer_parameters()) * 2
    layer_gradients = 2 * spec.layer_parameters() * 2 if task == "full" else 0
    assert four.part("fsdp_gathered") == gathered_weights + layer_gradients
    assert one.part("fsdp_gathered") == 0
    assert four.total < one.total


def test_fsdp_is_for_training_and_at_least_one() -> None:
    spec = catalog()["llama-3.2-1b"].spec()
    with pytest.raises(InvalidParameterError, match="--task lora or full"):
        estimate_memory(spec, PlanRequest(task="chat", fsdp=2))
    with pytest.raises(InvalidParameterError, match="at least 1"):
        estimate_memory(spec, PlanRequest(task="full", fsdp=0))


def test_cli_plans_per_process_and_prints_the_flag_back() -> None:
    application = typer.Typer()
    register(application)

    def plan(*args: str) -> dict:
        result = CliRunner().invoke(application, ["plan", *args, "--json"])
        assert result.exit_code == 0, result.output
        return json.loads(result.output)

    base = ["llama-3.2-1b", "--task", "full", "--device", "H100"]
    one, eight = plan(*base), plan(*base, "--fsdp", "8")
    parts = {p["key"]: p["bytes"] for p in one["memory"]["parts"]}
    sharded = {p["key"]: p["bytes"] for p in eight["memory"]["parts"]}
    assert sharded["optimizer"] == pytest.approx(parts["optimizer"] / 8, abs=1)
    assert eight["request"]["fsdp"] == 8
    request = PlanRequest(task="full", fsdp=8)
    assert plan_arguments("m", request, resolve_device("H100"))[-4:-2] == ["--fsdp", "8"]
    text = CliRunner().invoke(application, ["plan", *base, "--fsdp", "8"], env={"COLUMNS": "200"})
    assert "FSDP over 8 processes" in text.output and "FSDP all-gathered weights" in text.output
