"""Options derived from the settings dataclasses: each default, help text and range is written
once, beside the setting, and the CLI and the Python API refuse the same values alike."""

from __future__ import annotations

import dataclasses

import pytest
import typer
from tests.helpers.cli import run_cli

from llmkit.cli.app import app
from llmkit.errors import InvalidParameterError
from llmkit.settings import option_of
from llmkit.train.config import LOG_EVERY_MAX, FinetuneConfig
from llmkit.train.pretrain_config import PretrainConfig

LOG_EVERY = f"at least 1 step and at most {LOG_EVERY_MAX}"

# Every flag `llmkit finetune` took before its options were derived: each must still work.
FINETUNE_FLAGS = [
    "--data",
    "-d",
    "--out",
    "-o",
    "--eval",
    "--eval-split",
    "--method",
    "--epochs",
    "--max-steps",
    "--lr",
    "--warmup-steps",
    "--batch-size",
    "-b",
    "--grad-accum",
    "--max-length",
    "--too-long",
    "--packing",
    "--lora-r",
    "--lora-alpha",
    "--lora-dropout",
    "--lora-targets",
    "--seed",
    "--template",
    "--export",
    "--force",
    "--device",
    "--gradient-checkpointing",
    "--checkpoint-every",
    "--resume",
    "--run-dir",
    "--threads",
    "--allow-pickle",
    "--log-every",
    "--verbose",
    "--show-masks",
]


def _params(verb: str) -> dict[str, typer.core.TyperOption]:
    command = typer.main.get_command(app).commands[verb]  # type: ignore[attr-defined]
    return {param.name: param for param in command.params}


def test_finetune_keeps_every_flag_and_takes_defaults_and_help_from_its_config() -> None:
    params = _params("finetune")
    flags = {flag for param in params.values() for flag in param.opts}
    assert set(FINETUNE_FLAGS) <= flags
    for field in dataclasses.fields(FinetuneConfig):
        option = option_of(field)
        if option is None or field.name in ("base", "out"):
            continue
        param = params[field.name]
        assert param.help == option.help, field.name
        if field.default is dataclasses.MISSING:
            assert param.required, field.name
        else:
            assert param.default == field.default, field.name
        # A bounded setting is checked as the option is parsed, with the config's own check.
        assert (param.callback is not None) == option.bounded, field.name


@pytest.mark.parametrize(
    ("option", "value", "python", "sentence"),
    [
        ("--epochs", "0", 0, "--epochs must be at least 1 epoch (got 0)."),
        ("--lr", "2", 2.0, "--lr must be above 0 and below 1 (got 2.0)."),
        ("--lr", "nan", float("nan"), "--lr must be above 0 and below 1 (got nan)."),
        ("--lora-dropout", "1", 1.0, "--lora-dropout must be at least 0 and below 1 (got 1.0)."),
        ("--max-length", "4", 4, "--max-length must be at least 8 tokens (got 4)."),
        ("--method", "qlora", "qlora", "--method must be one of lora, full, not 'qlora'."),
        ("--threads", "0", 0, "--threads must be at least 1 thread (got 0)."),
        ("--weight-decay", "-1", -1.0, "--weight-decay must be at least 0 (got -1.0)."),
        ("--log-every", "0", 0, f"--log-every must be {LOG_EVERY} (got 0)."),
    ],
)
def test_the_cli_and_the_python_api_refuse_a_setting_in_the_same_sentence(
    option: str, value: str, python: object, sentence: str
) -> None:
    # The data file does not exist: the setting is refused before anything is read.
    result = run_cli("finetune", "smollm2", "-d", "/nonexistent.jsonl", "-o", "x", option, value)
    assert result.returncode == 2 and result.stderr == f"Error: {sentence}\n"
    name = option.lstrip("-").replace("-", "_")
    with pytest.raises(InvalidParameterError) as refused:
        FinetuneConfig(base="b", data="d", out="o", **{name: python}).validated()
    assert str(refused.value) == sentence


def test_help_shows_each_setting_with_its_default() -> None:
    shown = " ".join(run_cli("finetune", "--help").stdout.split())
    assert "Peak learning rate (linear decay to 0)." in shown
    assert "[default: 0.0002]" in shown and "[default: lora]" in shown
    assert "--weight-decay" in shown and "AdamW weight decay." in shown


@pytest.mark.parametrize("value", [0, LOG_EVERY_MAX + 1])
def test_pretrain_takes_log_every_from_its_config(value: int) -> None:
    sentence = f"--log-every must be {LOG_EVERY} (got {value})."
    result = run_cli("pretrain", "--demo", "-o", "x", "--log-every", str(value))
    assert result.returncode == 2 and result.stderr == f"Error: {sentence}\n"
    with pytest.raises(InvalidParameterError) as refused:
        PretrainConfig(out="o", demo=True, log_every=value).validated()
    assert str(refused.value) == sentence
    assert _params("pretrain")["log_every"].default == 10


def test_how_often_progress_is_logged_does_not_stop_a_resume() -> None:
    finetune = FinetuneConfig(base="b", data="d", out="o")
    assert dataclasses.replace(finetune, log_every=3).fingerprint() == finetune.fingerprint()
    pretrain = PretrainConfig(out="o", demo=True)
    assert dataclasses.replace(pretrain, log_every=3).fingerprint("c") == pretrain.fingerprint("c")


@pytest.mark.parametrize(
    ("config", "pair", "sentence"),
    [
        (
            FinetuneConfig(base="b", data="d", out="o", eval_data="e", eval_split=0.1),
            ("eval_data", "eval_split"),
            "Give either --eval or --eval-split, not both.",
        ),
        (
            PretrainConfig(out="o", demo=True, tokens=1000, steps=10),
            ("tokens", "steps"),
            "Give either --tokens or --steps, not both.",
        ),
    ],
)
def test_settings_that_exclude_each_other_are_named_by_their_flags(
    config: FinetuneConfig | PretrainConfig, pair: tuple[str, str], sentence: str
) -> None:
    with pytest.raises(InvalidParameterError) as refused:
        config.validated()
    assert str(refused.value) == sentence
    for name in pair:  # either one alone passes
        dataclasses.replace(config, **{name: None}).validated()
