"""Pretraining from nothing: a small llama model learns next-token prediction on plain text.

The corpus becomes one token stream; its last part is held out. Each step trains on windows
drawn from the rest at offsets that depend only on the seed and the step number, so --resume
continues with exactly the batches an unbroken run would have seen, and under torchrun every
process takes its share of one global batch. The held-out loss is compared with a unigram model's
(token frequencies alone): the gap is what the model learnt from context. At the end the model is
written as GGUF into the store, where llama.cpp runs it and `llmkit finetune` can start from it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from llmkit.errors import InvalidModelFileError, InvalidParameterError, require_module
from llmkit.store.store import ModelStore
from llmkit.train.checkpoint import (
    clear_checkpoints,
    load_checkpoint,
    make_run_dir,
    save_checkpoint,
)
from llmkit.train.corpus import Corpus, encode_corpus, read_corpus, separator_id
from llmkit.train.data import DataError
from llmkit.train.device import training_device
from llmkit.train.distributed import Distributed
from llmkit.train.metrics import PLOT_FILE, MetricsLog, StepMetrics, plot_loss
from llmkit.train.model_config import ModelShape, model_shape
from llmkit.train.pretrain_config import EXPORT_TYPES, TRAINED_TOKENIZER, PretrainConfig
from llmkit.train.quiet import quiet_libraries

CHINCHILLA_TOKENS_PER_PARAMETER = 20  # Hoffmann et al. 2022: compute-optimal training
# Below this many corpus tokens per parameter the model can learn the corpus by heart.
FEW_TOKENS_PER_PARAMETER = 0.1
MAX_GRAD_NORM = 1.0
EVAL_WINDOWS = 32  # held-out windows scored at each evaluation (a fixed set)
SAMPLES_PER_RUN = 5
MODEL_FOLDER = "model"  # the trained model as a Hugging Face folder, in the run folder


@dataclass(frozen=True)
class PretrainStep:
    """What the progress callback gets after each step (and with a sample, every N steps)."""

    metrics: StepMetrics
    parameters: int
    eval_loss: float | None = None
    sample: str | None = None

    @property
    def tokens_per_parameter(self) -> float:
        return self.metrics.tokens / self.parameters


@dataclass
class PretrainResult:
    run_dir: Path
    steps: int
    parameters: int
    final_loss: float
    eval_loss: float
    unigram_loss: float
    tokens: int
    tokens_per_second: float
    exported: str | None = None
    plot: Path | None = None
    notes: list[str] = field(default_factory=list)


ProgressCallback = Callable[[PretrainStep], None]


@dataclass
class TokenStream:
    """The encoded corpus split into training and held-out tokens."""

    train: np.ndarray
    heldout: np.ndarray
    context: int

    def batch(self, seed: int, step: int, rows: int) -> np.ndarray:
        """ROWS windows of context + 1 tokens at offsets fixed by (seed, step)."""
        generator = np.random.default_rng([seed, step])
        offsets = generator.integers(0, len(self.train) - self.context, size=rows)
        return np.stack([self.train[o : o + self.context + 1] for o in offsets])

    def eval_windows(self) -> np.ndarray:
        """Consecutive held-out windows (at most EVAL_WINDOWS), the same at every evaluation."""
        length = min(self.context, len(self.heldout) - 1)
        count = min(EVAL_WINDOWS, (len(self.heldout) - 1) // length)
        return np.stack([self.heldout[i * length : i * length + length + 1] for i in range(count)])


def split_stream(stream: np.ndarray, eval_split: float, context: int) -> TokenStream:
    """Hold out the stream's last tokens; DataError when too little is left for one window."""
    heldout = max(int(len(stream) * eval_split), 2)
    train = stream[:-heldout]
    if len(train) <= context:
        raise DataError(
            f"The corpus is {len(stream):,} tokens; training on windows of {context} tokens needs "
            f"more than {context + heldout:,} (with {heldout:,} held out). Give more text, or a "
            "shorter --context."
        )
    return TokenStream(train, stream[-heldout:], context)


def unigram_loss(train: np.ndarray, targets: np.ndarray, vocab_size: int) -> float:
    """Held-out loss (nats per token) of token frequencies alone, add-one smoothed: the floor a
    model that reads no context at all reaches."""
    counts = np.bincount(train, minlength=vocab_size).astype(np.float64) + 1.0
    logprob = np.log(counts / counts.sum())
    return float(-logprob[targets.reshape(-1)].mean())


def heldout_loss(model: Any, windows: np.ndarray, batch_size: int, device: str) -> float:
    import torch

    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for start in range(0, len(windows), batch_size):
            chunk = torch.from_numpy(windows[start : start + batch_size]).long().to(device)
            total += float(loss_sum(model, chunk))
            count += chunk[:, 1:].numel()
    model.train(was_training)
    return total / count


def loss_sum(model: Any, windows: Any) -> Any:
    """Summed next-token cross-entropy over every position of the windows."""
    import torch

    logits = model(input_ids=windows[:, :-1], use_cache=False).logits
    return torch.nn.functional.cross_entropy(
        logits.float().reshape(-1, logits.shape[-1]), windows[:, 1:].reshape(-1), reduction="sum"
    )


def sample_text(
    model: Any,
    tokenizer: Any,
    prompt_ids: list[int],
    *,
    new_tokens: int,
    context: int,
    seed: int,
    device: str,
    stop_id: int | None,
) -> str:
    """A sampled continuation (temperature 0.8, top 40), reproducible from SEED."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    ids = list(prompt_ids)
    was_training = model.training
    model.eval()
    with torch.no_grad():
        for _ in range(new_tokens):
            window = torch.tensor([ids[-context:]], device=device)
            logits = model(input_ids=window, use_cache=False).logits[0, -1].float().cpu()
            top = torch.topk(logits / 0.8, k=min(40, logits.shape[-1]))
            choice = torch.multinomial(torch.softmax(top.values, -1), 1, generator=generator)
            token = int(top.indices[choice])
            if token == stop_id:
                break
            ids.append(token)
    model.train(was_training)
    return str(tokenizer.decode(ids[len(prompt_ids) :]))


def _adamw(torch: Any, groups: list[dict[str, Any]], lr: float) -> Any:
    """AdamW with the fused kernel, which updates every tensor in one pass (on CPU the default
    loops over them); torch before 2.4 has none for the CPU and gets the default."""
    try:
        return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.95), fused=True)
    except (RuntimeError, ValueError):
        return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.95))


def default_prompt(heldout: np.ndarray, end: int | None, length: int = 6) -> list[int]:
    """The first tokens of the first held-out document that starts within it (else of the
    held-out text): text the model never trained on, from where a text begins."""
    ids = [int(t) for t in heldout]
    if end in ids:
        after = ids[ids.index(end) + 1 :]
        if len(after) >= length and end not in after[:length]:
            return after[:length]
    return [t for t in ids[:length] if t != end]


def _learning_rate(config: PretrainConfig, total: int) -> Callable[[int], float]:
    """Linear warm-up, then a cosine decay to a tenth of the peak (the usual pretraining shape)."""
    warmup = config.warmup_steps if config.warmup_steps is not None else max(total // 20, 1)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(total - warmup, 1)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))

    return factor


@dataclass
class _Tokenizer:
    tokenizer: Any
    name: str
    gguf: Path | None  # a store GGUF whose tokenizer keys the export copies
    json: Path | None  # else a tokenizer.json the export converts


def _reused_tokenizer(store: ModelStore, name: str) -> _Tokenizer:
    from llmkit.train.gguf_fresh import check_byte_level_bpe
    from llmkit.train.prepare import load_tokenizer

    manifest = store.resolve(name)
    if manifest.adapter:
        raise InvalidParameterError(f"'{name}' is a LoRA adapter; name its base model.")
    tokenizer = load_tokenizer(manifest)
    if manifest.format == "gguf":
        return _Tokenizer(tokenizer, f"'{name}'", manifest.weights_path, None)
    tokenizer_json = manifest.weights_path / "tokenizer.json"
    if not tokenizer_json.exists():
        raise InvalidParameterError(
            f"'{name}' has no tokenizer.json, which the GGUF export needs; use --tokenizer train."
        )
    check_byte_level_bpe(tokenizer_json)
    return _Tokenizer(tokenizer, f"'{name}'", None, tokenizer_json)


def _trained_tokenizer(
    corpus: Corpus, shape: ModelShape, run_dir: Path, distributed: Distributed, reuse: bool
) -> _Tokenizer:
    """Trained on the corpus by the first process (or read back on --resume), the others wait."""
    from llmkit.train.tokenizer_train import FOLDER, load_saved_tokenizer, train_tokenizer

    folder = run_dir / FOLDER
    if distributed.rank == 0 and not (reuse and (folder / "tokenizer.json").exists()):
        train_tokenizer(corpus.documents, shape.vocab_size, folder)
    distributed.barrier()
    return _Tokenizer(
        load_saved_tokenizer(folder), "the trained tokenizer", None, folder / "tokenizer.json"
    )


def corpus_files(config: PretrainConfig, store: ModelStore) -> list[str]:
    files = list(config.data)
    if config.demo:
        from llmkit.train.demo_corpus import write_demo_corpus

        files.append(str(write_demo_corpus(store.home / "corpora")))
    return files


def pretrain(
    config: PretrainConfig,
    *,
    progress: ProgressCallback | None = None,
    log: Callable[[str], None] = lambda message: None,
    home: str | Path | None = None,
) -> PretrainResult:
    """Train a model from nothing on the corpus and export it into the store (see PretrainConfig)."""
    config.validated()
    shape = model_shape(config.size)
    store = ModelStore(home)
    from llmkit.train.prepare import check_export_names

    check_export_names(store, {"gguf": config.out}, config.force)
    corpus = read_corpus(corpus_files(config, store))  # bad input fails before torch loads
    torch = require_module("torch", feature="Pretraining", extra="torch")
    require_module("transformers", feature="Pretraining", extra="torch")
    distributed = Distributed.from_environment(torch)
    device = training_device(config.device, torch, distributed.local_rank, distributed.world_size)
    run_dir = Path(config.run_dir or store.home / "runs" / config.out).expanduser()
    if distributed.rank == 0:
        make_run_dir(run_dir)
    with quiet_libraries(config.verbose):
        reused = (
            None
            if config.tokenizer == TRAINED_TOKENIZER
            else _reused_tokenizer(store, config.tokenizer)
        )
        distributed.setup(device)
        try:
            if reused is None:
                log(
                    f"Training a byte-level BPE tokenizer ({shape.vocab_size:,} tokens) on the corpus…"
                )
            chosen = reused or _trained_tokenizer(
                corpus, shape, run_dir, distributed, reuse=config.resume
            )
            return _train(config, shape, corpus, chosen, store, run_dir, distributed, device,
                          progress, log)  # fmt: skip
        finally:
            distributed.teardown()


def _train(
    config: PretrainConfig,
    shape: ModelShape,
    corpus: Corpus,
    chosen: _Tokenizer,
    store: ModelStore,
    run_dir: Path,
    distributed: Distributed,
    device: str,
    progress: ProgressCallback | None,
    log: Callable[[str], None],
) -> PretrainResult:
    import torch
    import transformers

    main = distributed.rank == 0
    tokenizer = chosen.tokenizer
    shape = shape.with_vocabulary(len(tokenizer))
    context = config.context or shape.max_position_embeddings
    if context > shape.max_position_embeddings:
        raise InvalidParameterError(
            f"--context {context} is longer than the model's {shape.max_position_embeddings} "
            "positions (max_position_embeddings)."
        )
    stream = split_stream(encode_corpus(corpus, tokenizer, chosen.name), config.eval_split, context)
    parameters = shape.parameters()
    per_parameter = len(stream.train) / parameters
    if per_parameter < FEW_TOKENS_PER_PARAMETER:
        log(
            f"The corpus is small for this model: {len(stream.train):,} training tokens for "
            f"{parameters / 1e6:.1f}M parameters, {per_parameter:.2f} tokens per parameter "
            f"(compute-optimal training sees about {CHINCHILLA_TOKENS_PER_PARAMETER}); it will "
            "learn the corpus by heart rather than the language. Give more text or a smaller "
            "--size."
        )
    global_rows = config.batch_size * distributed.world_size
    tokens_per_step = global_rows * context
    total_steps = (
        math.ceil(config.tokens / tokens_per_step) if config.tokens else config.default_steps()
    )
    if config.threads:
        torch.set_num_threads(config.threads)
    end = separator_id(tokenizer)
    eos = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else (end or 0)
    bos = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else eos
    fingerprint = config.fingerprint(corpus.digest)
    state = load_checkpoint(run_dir, fingerprint, torch) if config.resume else None
    if config.resume and state is None:
        log(f"No checkpoint in {run_dir}; starting from step 0.")
    if main and state is None:
        clear_checkpoints(run_dir)
    distributed.barrier()

    torch.manual_seed(config.seed)  # the initial weights, identical on every process
    model = transformers.LlamaForCausalLM(shape.transformers_config(bos, eos)).to(device)
    log(
        f"{parameters / 1e6:.2f}M parameters, vocabulary {shape.vocab_size:,}; "
        f"{len(stream.train):,} training tokens, {len(stream.heldout):,} held out; "
        f"{total_steps} steps of {tokens_per_step:,} tokens."
    )
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2]
    optimizer = _adamw(torch, [
        {"params": decay, "weight_decay": config.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ], config.lr)  # fmt: skip
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _learning_rate(config, total_steps))
    parameter_list = list(model.parameters())
    trainer = distributed.wrap_model(model)  # DDP under torchrun; evaluation uses the model itself
    start_step = 0
    if state is not None:
        model.load_state_dict(state["weights"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["rng"])
        start_step = state["step"]
        log(f"Resuming from step {start_step} of {total_steps}.")
    metrics = MetricsLog(run_dir, start_step if state is not None else None) if main else None

    windows = stream.eval_windows()
    unigram = unigram_loss(stream.train, windows[:, 1:], shape.vocab_size)
    every = (
        config.sample_every
        if config.sample_every is not None
        else max(total_steps // SAMPLES_PER_RUN, 1)
    )
    prompt_ids = (
        list(tokenizer(config.sample_prompt, add_special_tokens=False)["input_ids"])
        if config.sample_prompt
        else default_prompt(stream.heldout, end)
    ) or [end if end is not None else 0]
    if every:
        log(
            f"Every {every} steps: the held-out loss, and a sample after {tokenizer.decode(prompt_ids)!r}."
        )
    autocast = (
        torch.autocast("cuda", dtype=torch.bfloat16)
        if device.startswith("cuda") and torch.cuda.is_bf16_supported()
        else None
    )
    evals: list[tuple[int, float]] = []
    model.train()
    started, tokens_done, loss = time.perf_counter(), 0, float("nan")
    tokens_before = start_step * tokens_per_step
    for step in range(start_step, total_steps):
        rows = stream.batch(config.seed, step, global_rows)[
            distributed.rank :: distributed.world_size
        ]
        batch = torch.from_numpy(rows).long().to(device)
        if autocast is not None:
            with autocast:
                summed = loss_sum(trainer, batch)
        else:
            summed = loss_sum(trainer, batch)
        # Divided by the global batch's target count (DDP's averaging over processes undone),
        # the gradient is that of one mean over the global batch, as in fine-tuning.
        (summed * (distributed.gradient_scale / (global_rows * context))).backward()
        step_loss = distributed.reduce_sum([float(summed.detach())])[0]
        torch.nn.utils.clip_grad_norm_(parameter_list, MAX_GRAD_NORM)
        learning_rate = scheduler.get_last_lr()[0]
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        loss = step_loss / (global_rows * context)
        tokens_done += tokens_per_step
        done = step + 1
        if not main:
            distributed.barrier_if_checkpoint(config.checkpoint_every, done)
            continue
        elapsed = time.perf_counter() - started
        record = StepMetrics(
            done, total_steps, loss, learning_rate, tokens_before + tokens_done,
            tokens_done / elapsed if elapsed > 0 else 0.0, elapsed,
            elapsed / (done - start_step) * (total_steps - done),
        )  # fmt: skip
        assert metrics is not None
        metrics.write(record.to_json())
        eval_loss = sample = None
        if every and (done % every == 0 or done == total_steps):
            eval_loss = heldout_loss(model, windows, config.batch_size, device)
            evals.append((done, eval_loss))
            sample = sample_text(
                model, tokenizer, prompt_ids, new_tokens=config.sample_tokens, context=context,
                seed=config.seed, device=device, stop_id=end,
            )  # fmt: skip
            metrics.write({"event": "eval", "step": done, "loss": eval_loss, "sample": sample})
        if progress:
            progress(PretrainStep(record, parameters, eval_loss, sample))
        if config.checkpoint_every and done % config.checkpoint_every == 0 and done < total_steps:
            save_checkpoint(
                run_dir,
                done,
                {
                    "fingerprint": fingerprint,
                    "step": done,
                    "weights": {k: v.detach().cpu() for k, v in model.state_dict().items()},
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "rng": torch.get_rng_state(),
                },
                torch,
            )
        distributed.barrier_if_checkpoint(config.checkpoint_every, done)
    elapsed = time.perf_counter() - started
    speed = tokens_done / elapsed if elapsed > 0 else 0.0
    if not main:
        distributed.barrier()
        return PretrainResult(run_dir, total_steps, parameters, loss, math.nan, unigram,
                              tokens_before + tokens_done, speed)  # fmt: skip
    final_eval = (
        evals[-1][1]
        if evals and evals[-1][0] == total_steps
        else heldout_loss(model, windows, config.batch_size, device)
    )
    assert metrics is not None
    metrics.write({"event": "final", "eval_loss": final_eval, "unigram_loss": unigram})
    result = PretrainResult(run_dir, total_steps, parameters, loss, final_eval, unigram,
                            tokens_before + tokens_done, speed)  # fmt: skip
    result.plot = plot_loss(
        metrics, run_dir / PLOT_FILE, curves={"held-out loss": evals or [(total_steps, final_eval)]},
        levels={"unigram model (held-out)": unigram},
    )  # fmt: skip
    if result.plot is None:
        result.notes.append("matplotlib is not installed, so no loss-curve PNG was drawn.")
    folder = run_dir / MODEL_FOLDER
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    log("Exporting into the store…")
    result.exported = export_pretrained(model, shape, chosen, store, config, bos, eos)
    clear_checkpoints(run_dir)
    distributed.barrier()
    return result


def export_pretrained(
    model: Any,
    shape: ModelShape,
    chosen: _Tokenizer,
    store: ModelStore,
    config: PretrainConfig,
    bos: int,
    eos: int,
) -> str:
    """Write the GGUF into a staging folder and import it into the store as config.out."""
    import shutil

    from llmkit.store.gguf_meta import read_gguf_header
    from llmkit.train.gguf_fresh import write_fresh_gguf
    from llmkit.train.prepare import check_export_names

    check_export_names(store, {"gguf": config.out}, config.force)  # taken while training?
    store.models_root.mkdir(parents=True, exist_ok=True)
    staging = store.staging("pretrain")
    try:
        state = {k: v.detach().float().cpu().numpy() for k, v in model.state_dict().items()}
        target = write_fresh_gguf(
            state, shape, staging / f"{config.out}.gguf",
            tokenizer_json=chosen.json, tokenizer_gguf=chosen.gguf, bos_id=bos, eos_id=eos,
            tensor_type=EXPORT_TYPES[config.export], name=config.out,
        )  # fmt: skip
        try:
            read_gguf_header(target)
        except InvalidModelFileError as error:
            raise InvalidModelFileError(f"The exported GGUF is not readable: {error}") from error
        store.import_model(target, config.out, move=True, force=True, provenance="pretrain")
        return config.out
    finally:
        shutil.rmtree(staging, ignore_errors=True)
