"""Pretraining throughput: `llmkit pretrain`'s loop against a plain PyTorch loop, same model,
data and batch.

The plain loop is the floor any framework should not fall below: the same LlamaForCausalLM
(same shape, same seed), the same windows of the same token stream, forward, cross-entropy,
backward, gradient clipping and torch's default AdamW step, timed over the same steps. The two
alternate for several rounds in one process, so both see the same machine. Prints JSON:

    python benchmarks/pretrain_speed.py [--size tiny] [--steps 30] [--rounds 3] [--batch-size 16]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path


def run_llmkit(args: argparse.Namespace, home: Path) -> float:
    from llmkit.train.pretrain import pretrain
    from llmkit.train.pretrain_config import PretrainConfig

    config = PretrainConfig(
        out="bench", demo=True, size=args.size, steps=args.steps, batch_size=args.batch_size,
        sample_every=0, force=True, threads=args.threads, run_dir=str(home / "run"),
    )  # fmt: skip
    return pretrain(config, home=home).tokens_per_second


def run_plain(args: argparse.Namespace, home: Path) -> float:
    import torch
    import transformers

    from llmkit.train.corpus import encode_corpus, read_corpus
    from llmkit.train.demo_corpus import write_demo_corpus
    from llmkit.train.model_config import model_shape
    from llmkit.train.pretrain import split_stream
    from llmkit.train.tokenizer_train import load_saved_tokenizer

    if args.threads:
        torch.set_num_threads(args.threads)
    # The tokenizer the llmkit round trained and the same held-out split: the same token stream.
    tokenizer = load_saved_tokenizer(home / "run" / "tokenizer")
    corpus = read_corpus([write_demo_corpus(home / "corpora")])
    shape = model_shape(args.size).with_vocabulary(len(tokenizer))
    context = shape.max_position_embeddings
    stream = split_stream(encode_corpus(corpus, tokenizer, "bench"), 0.05, context)
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(shape.transformers_config(0, 0))
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3)
    started = time.perf_counter()
    for step in range(args.steps):
        batch = torch.from_numpy(stream.batch(0, step, args.batch_size)).long()
        logits = model(input_ids=batch[:, :-1]).logits
        loss = torch.nn.functional.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), batch[:, 1:].reshape(-1)
        )
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        loss.item()  # the loss a loop reports each step
    elapsed = time.perf_counter() - started
    return args.steps * args.batch_size * context / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", default="tiny")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    llmkit, plain = [], []
    with tempfile.TemporaryDirectory() as folder:
        home = Path(folder)
        run_llmkit(args, home)  # trains the tokenizer both loops read; warms the allocator
        for index in range(args.rounds):
            # Alternating which goes first, so neither always runs on a warmer machine.
            if index % 2:
                plain.append(run_plain(args, home))
                llmkit.append(run_llmkit(args, home))
            else:
                llmkit.append(run_llmkit(args, home))
                plain.append(run_plain(args, home))
    ratios = [a / b for a, b in zip(llmkit, plain)]
    print(
        json.dumps(
            {
                "size": args.size,
                "steps": args.steps,
                "batch_size": args.batch_size,
                "llmkit_tokens_per_second": [round(v) for v in llmkit],
                "plain_tokens_per_second": [round(v) for v in plain],
                "median_ratio": round(statistics.median(ratios), 3),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
