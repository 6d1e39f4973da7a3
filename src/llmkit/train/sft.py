"""Supervised fine-tuning (LoRA through peft, or full) with a small, deterministic training loop.

The loop is written here rather than borrowed from a trainer so that three things hold by
construction: the loss is the mean over the global batch's assistant tokens whatever the split over
micro-batches and processes (so DDP equals one process), the data order comes from the seed alone
(so --resume after kill -9 reaches the same loss), and logits are computed only where there is a
target (the vocabulary projection is a large part of a small model's work).
"""

from __future__ import annotations

import functools
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llmkit.errors import InvalidModelFileError, InvalidParameterError, require_module
from llmkit.train.batches import IGNORE, BatchPlan, Row, collate, make_rows, trained_targets
from llmkit.train.checkpoint import (
    clear_checkpoints,
    load_checkpoint,
    load_shards,
    make_run_dir,
    save_checkpoint,
)
from llmkit.train.config import FinetuneConfig
from llmkit.train.device import training_device
from llmkit.train.distributed import Distributed
from llmkit.train.masks import TokenizedExample
from llmkit.train.metrics import PLOT_FILE, MetricsLog, StepMetrics, plot_loss
from llmkit.train.prepare import PreparedRun, check_memory, model_folder_arguments, prepare_run
from llmkit.train.quiet import quiet_libraries

ProgressCallback = Callable[[StepMetrics], None]
MAX_GRAD_NORM = 1.0
# Fault injection for the resume test: stop (and wait to be killed) after this checkpoint step.
HANG_AFTER_CHECKPOINT_ENV = "LLMKIT_FINETUNE_HANG_AFTER_CHECKPOINT"


@dataclass
class FinetuneResult:
    """What a run produced; `exports` maps export kind to its store name."""

    run_dir: Path
    steps: int
    final_loss: float
    tokens_per_second: float
    eval_before: float | None = None
    eval_after: float | None = None
    exports: dict[str, str] = field(default_factory=dict)
    plot: Path | None = None
    notes: list[str] = field(default_factory=list)

    @staticmethod
    def perplexity(loss: float | None) -> float | None:
        return math.exp(min(loss, 50.0)) if loss is not None else None


def _dtype(torch: Any, device: str) -> Any:
    use_bf16 = device.startswith("cuda") and torch.cuda.is_bf16_supported()
    return torch.bfloat16 if use_bf16 else torch.float32


def load_model(prepared: PreparedRun, device: str) -> Any:
    torch = require_module("torch", feature="Fine-tuning", extra="torch")
    transformers = require_module("transformers", feature="Fine-tuning", extra="torch")
    folder, arguments = model_folder_arguments(prepared.manifest)
    try:
        model = transformers.AutoModelForCausalLM.from_pretrained(
            folder, dtype=_dtype(torch, device), **arguments
        )
    except (OSError, ValueError) as error:
        raise InvalidModelFileError(
            f"transformers could not load {prepared.manifest.path}: {error}"
        ) from error
    return model.to(device)


def training_model(prepared: PreparedRun, distributed: Distributed, device: str) -> Any:
    """The base model as training starts from it. Under FSDP only rank 0 reads the weights: the
    others build the same model from rank 0's config on the meta device, which takes no memory,
    and `Distributed.wrap_model` later gives them their shards of rank 0's weights."""
    if not distributed.sharded:
        return load_model(prepared, device)
    model = load_model(prepared, device) if distributed.is_main else None
    config = distributed.broadcast(model.config if model is not None else None)
    if model is not None:
        return model
    torch = require_module("torch", feature="Fine-tuning", extra="torch")
    transformers = require_module("transformers", feature="Fine-tuning", extra="torch")
    with torch.device("meta"):
        return transformers.AutoModelForCausalLM.from_config(config, dtype=_dtype(torch, device))


def add_lora(model: Any, config: FinetuneConfig) -> Any:
    peft = require_module("peft", feature="LoRA fine-tuning", extra="torch")
    lora = peft.LoraConfig(
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=config.lora_target_modules,
        bias="none",
        task_type="CAUSAL_LM",
    )
    return peft.get_peft_model(model, lora)


def causal_lm(model: Any) -> Any:
    """The *ForCausalLM module under a peft wrapper (LoRA layers are injected into it in place)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def loss_sum(model: Any, batch: dict[str, Any]) -> Any:
    """Summed cross-entropy over the batch's targets, computing logits only where there is one."""
    torch = require_module("torch", feature="Fine-tuning", extra="torch")
    lm = causal_lm(model)
    hidden = lm.get_decoder()(
        input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=False
    ).last_hidden_state
    labels = batch["labels"][:, 1:]
    select = labels != IGNORE
    logits = lm.get_output_embeddings()(hidden[:, :-1][select]).float()
    softcap = getattr(lm.config, "final_logit_softcapping", None)
    if softcap:
        logits = torch.tanh(logits / softcap) * softcap
    return torch.nn.functional.cross_entropy(logits, labels[select], reduction="sum")


def evaluate(
    model: Any, examples: list[TokenizedExample], batch_size: int, pad_id: int, device: str
) -> float | None:
    """Mean loss per assistant token over the eval rows (None without eval data).

    MODEL is a model or its loss_module (which under FSDP every process must call together)."""
    if not examples:
        return None
    torch = require_module("torch", feature="Fine-tuning", extra="torch")
    rows = make_rows(examples, 0, packing=False)
    total, count = 0.0, 0
    was_training = model.training
    model.eval()
    with torch.no_grad():
        for start in range(0, len(rows), batch_size):
            chunk = rows[start : start + batch_size]
            batch = {k: v.to(device) for k, v in collate(examples, chunk, pad_id, torch).items()}
            is_loss = isinstance(model, _loss_module_class())
            total += float(model(**batch) if is_loss else loss_sum(model, batch))
            count += trained_targets(examples, chunk)
    model.train(was_training)
    return total / max(count, 1)


def _schedule(config: FinetuneConfig, total_steps: int) -> Callable[[int], float]:
    def factor(step: int) -> float:
        if step < config.warmup_steps:
            return (step + 1) / (config.warmup_steps + 1)
        remaining = total_steps - config.warmup_steps
        return max(0.0, 1.0 - (step - config.warmup_steps) / max(remaining, 1))

    return factor


def finetune(
    config: FinetuneConfig,
    *,
    progress: ProgressCallback | None = None,
    log: Callable[[str], None] = lambda message: None,
    home: str | Path | None = None,
) -> FinetuneResult:
    """Fine-tune, evaluate before and after, and export into the store (see FinetuneConfig)."""
    config.validated()  # settings and device are checked before any file is read
    torch = require_module("torch", feature="Fine-tuning", extra="torch")
    distributed = Distributed.from_environment(torch, fsdp=config.fsdp)
    device = training_device(config.device, torch, distributed.local_rank, distributed.world_size)
    with quiet_libraries(config.verbose):
        prepared = prepare_run(config, home)
        summary = prepared.length_report.summary(config.max_length)
        notes = [summary] if summary else []
        if config.fsdp and not distributed.sharded:
            notes.append(
                "--fsdp shards over several processes (torchrun); one process trains unsharded."
            )
        for note in notes:
            log(note)
        log(
            f"{len(prepared.train)} training rows, {len(prepared.eval)} evaluation rows; "
            f"loading {config.base}…"
        )
        distributed.setup(device)
        try:
            return _train(prepared, distributed, device, progress, log, notes)
        finally:
            distributed.teardown()


def decoder_layers(model: Any) -> list[Any]:
    """The decoder's layers: FSDP shards each as one unit, so one layer's weights are whole at a
    time."""
    return list(getattr(causal_lm(model).get_decoder(), "layers", ()))


@functools.cache
def _loss_module_class() -> type:
    import torch

    class TargetLoss(torch.nn.Module):
        """The model with `loss_sum` as its forward: DDP and FSDP act in a module's forward, and
        the loss skips the model's own (which would compute logits everywhere)."""

        def __init__(self, model: Any) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids: Any, position_ids: Any, labels: Any) -> Any:
            batch = {"input_ids": input_ids, "position_ids": position_ids, "labels": labels}
            return loss_sum(self.model, batch)

    return TargetLoss


def loss_module(model: Any) -> Any:
    return _loss_module_class()(model)


def _check_world(state: dict[str, Any], distributed: Distributed) -> None:
    saved = int(state.get("world_size", 1))
    if saved != distributed.world_size:
        raise InvalidParameterError(
            f"The checkpoint in {state['folder']} was written by {saved} process"
            f"{'' if saved == 1 else 'es'} and this run has {distributed.world_size}; the global "
            "batch depends on the count, so resume with the same number."
        )


def _gathered_model(
    prepared: PreparedRun, model: Any, trainer: Any, distributed: Distributed
) -> Any:
    """The model to export: itself, or under FSDP a whole copy on rank 0 built from every
    process's shards (None on the other ranks, which only contribute theirs)."""
    if not distributed.sharded:
        return model
    full = distributed.full_state(trainer)
    if full is None:
        return None
    config = prepared.config
    torch = require_module("torch", feature="Fine-tuning", extra="torch")
    torch.manual_seed(config.seed)
    whole = load_model(prepared, "cpu")
    if config.method == "lora":
        whole = add_lora(whole, config)
    prefix = "model."  # the loss module holds the model under this name
    whole.load_state_dict({name.removeprefix(prefix): value for name, value in full.items()})
    return whole


def _train(
    prepared: PreparedRun,
    distributed: Distributed,
    device: str,
    progress: ProgressCallback | None,
    log: Callable[[str], None],
    notes: list[str],
) -> FinetuneResult:
    import torch

    config = prepared.config
    check_memory(
        prepared,
        "cuda" if device.startswith("cuda") else "cpu",
        shards=distributed.world_size if distributed.sharded else 1,
    )
    if config.threads:
        torch.set_num_threads(config.threads)
    run_dir = Path(config.run_dir or prepared.store.home / "runs" / config.out).expanduser()
    main = distributed.is_main
    if main:
        make_run_dir(run_dir)
    state = load_checkpoint(run_dir, prepared.fingerprint, torch) if config.resume else None
    if config.resume and state is None:
        log(f"No checkpoint in {run_dir}; starting from step 0.")
    if state is not None:
        _check_world(state, distributed)
    if main and state is None:
        clear_checkpoints(run_dir)
    distributed.barrier()

    torch.manual_seed(config.seed)  # the LoRA initialisation, identical on every process
    model = training_model(prepared, distributed, device)
    if config.method == "lora":
        model = add_lora(model, config)
    if config.gradient_checkpointing:
        causal_lm(model).gradient_checkpointing_enable(
            gradient_checkpointing_kwargs={"use_reentrant": False}
        )
    trainer = distributed.wrap_model(loss_module(model), decoder_layers(model), device=device)
    # Where evaluation runs: on rank 0 alone, except under FSDP, where each pass needs everyone.
    evaluator = distributed.unwrap(trainer)
    evaluates = main or distributed.sharded
    parameters = [p for p in trainer.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(parameters, lr=config.lr, weight_decay=config.weight_decay)
    rows = make_rows(prepared.train, config.max_length, config.packing)
    plan = BatchPlan(
        rows,
        config.batch_size,
        config.grad_accum,
        distributed.world_size,
        config.epochs,
        config.seed,
        config.max_steps,
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _schedule(config, plan.total_steps))
    named = {name: p for name, p in model.named_parameters() if p.requires_grad}

    eval_before = None
    start_step = 0
    if state is not None:
        if state["sharded"]:
            shards = distributed.sharded_state(trainer, optimizer)
            load_shards(state, shards)
            distributed.load_sharded_state(trainer, optimizer, shards)
        else:
            with torch.no_grad():
                for name, value in state["weights"].items():
                    named[name].copy_(value.to(named[name].dtype))
            optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["rng"])
        start_step, eval_before = state["step"], state.get("eval_before")
        log(f"Resuming from step {start_step} of {plan.total_steps}.")
    elif evaluates:
        if prepared.eval:
            log(f"Evaluating on {len(prepared.eval)} rows before training…")
        eval_before = evaluate(evaluator, prepared.eval, config.batch_size, prepared.pad_id, device)
    metrics = MetricsLog(run_dir, start_step if state is not None else None) if main else None
    if metrics is not None and distributed.sharded:
        metrics.write({"event": "load", "meta_ranks": distributed.meta_ranks})

    trainer.train()
    started, tokens_done, loss = time.perf_counter(), 0, float("nan")
    hang_after = int(os.environ.get(HANG_AFTER_CHECKPOINT_ENV, "0") or 0)
    for step in range(start_step, plan.total_steps):
        step_rows = plan.step_rows(step)
        targets = trained_targets(prepared.train, [rows[i] for i in step_rows])
        step_loss, step_tokens = 0.0, 0
        micro_batches = plan.micro_batches(step, distributed.rank)
        for index, micro in enumerate(micro_batches):
            weight = 1.0
            if not micro:
                if distributed.world_size == 1:
                    continue
                # Each pass exchanges data between the processes, so all must run as many; a
                # stand-in row whose loss counts zero keeps a process with no rows left in step.
                micro, weight = step_rows[:1], 0.0
            chosen: list[Row] = [rows[i] for i in micro]
            batch = {
                k: v.to(device)
                for k, v in collate(prepared.train, chosen, prepared.pad_id, torch).items()
            }
            with distributed.gradient_sync(trainer, index == len(micro_batches) - 1):
                summed = trainer(**batch)
                # Dividing by the whole global batch's target count (and undoing the processes'
                # averaging) makes the gradient that of one mean, however the batch is split.
                (summed * (weight * distributed.gradient_scale / targets)).backward()
            if weight:
                step_loss += float(summed.detach())
                step_tokens += sum(row.length for row in chosen)
        step_loss, summed_tokens = distributed.reduce_sum([step_loss, step_tokens])
        step_tokens = int(summed_tokens)
        torch.nn.utils.clip_grad_norm_(parameters, MAX_GRAD_NORM)
        learning_rate = scheduler.get_last_lr()[0]
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        loss = step_loss / targets
        tokens_done += step_tokens
        elapsed = time.perf_counter() - started
        speed = tokens_done / elapsed if elapsed > 0 else 0.0
        done = step + 1
        if main:
            record = StepMetrics(
                done, plan.total_steps, loss, learning_rate, tokens_done, speed, elapsed,
                elapsed / (done - start_step) * (plan.total_steps - done),
            )  # fmt: skip
            assert metrics is not None
            metrics.write(record.to_json())
            if progress:
                progress(record)
        if (
            config.checkpoint_every
            and done % config.checkpoint_every == 0
            and done < plan.total_steps
        ):
            meta = {
                "fingerprint": prepared.fingerprint,
                "step": done,
                "world_size": distributed.world_size,
                "scheduler": scheduler.state_dict(),
                "rng": torch.get_rng_state(),
                "eval_before": eval_before,
            }
            if distributed.sharded:
                shards = distributed.sharded_state(trainer, optimizer)
                save_checkpoint(run_dir, done, meta, torch, shards=shards, distributed=distributed)
            elif main:
                weights = {name: p.detach().cpu() for name, p in named.items()}
                state_dicts = {"weights": weights, "optimizer": optimizer.state_dict()}
                save_checkpoint(run_dir, done, {**meta, **state_dicts}, torch)
            # The other processes wait while rank 0 writes, so none runs ahead of a checkpoint.
            distributed.barrier()
            if hang_after == done:
                time.sleep(600)
    elapsed = time.perf_counter() - started
    result = FinetuneResult(
        run_dir, plan.total_steps, loss, tokens_done / elapsed if elapsed else 0.0, notes=notes
    )
    if evaluates:
        if main and prepared.eval:
            log("Evaluating after training…")
        result.eval_after = evaluate(
            evaluator, prepared.eval, config.batch_size, prepared.pad_id, device
        )
    export_model = _gathered_model(prepared, model, trainer, distributed)
    if not main:
        distributed.barrier()
        return result
    result.eval_before = eval_before
    assert metrics is not None
    metrics.write(
        {
            "event": "eval",
            "before": result.eval_before,
            "after": result.eval_after,
            "final_loss": loss,
        }
    )
    evals = {
        k: v
        for k, v in (("before", result.eval_before), ("after", result.eval_after))
        if v is not None
    }
    result.plot = plot_loss(metrics, run_dir / PLOT_FILE, evals)
    if result.plot is None:
        notes.append("matplotlib is not installed, so no loss-curve PNG was drawn.")
    from llmkit.train.export import export_run

    log("Exporting into the store…")
    result.exports = export_run(prepared, export_model, log)
    clear_checkpoints(run_dir)  # the run is complete: nothing is left to resume
    distributed.barrier()
    return result
