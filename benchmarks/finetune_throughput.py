"""LoRA training throughput: `llmkit finetune` against TRL's SFTTrainer, same model, data and settings.

Each configuration runs in its own process (so peak memory is that process's own maximum resident
set) and prints one JSON object; the parent prints them all as a JSON list. Usage:

    python benchmarks/finetune_throughput.py [--steps 8] [--batch-size 4] [--max-length 128]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DATA = Path(__file__).resolve().parents[1] / "examples" / "finetune" / "persona.jsonl"
CONFIGS = ("llmkit", "llmkit-packing", "trl")


def run_llmkit(args: argparse.Namespace, packing: bool) -> dict:
    from llmkit.train import FinetuneConfig, finetune

    with tempfile.TemporaryDirectory() as home:
        result = finetune(
            FinetuneConfig(
                base=args.model,
                data=str(DATA),
                out="bench",
                max_steps=args.steps,
                lr=2e-4,
                batch_size=args.batch_size,
                max_length=args.max_length,
                packing=packing,
                lora_r=args.lora_r,
                lora_alpha=2 * args.lora_r,
                exports=("adapter",),
            ),
            home=home,
        )
    return {"tokens_per_second": result.tokens_per_second, "final_loss": result.final_loss}


def run_trl(args: argparse.Namespace) -> dict:
    import datasets
    import peft
    import transformers
    import trl

    from llmkit.store.store import ModelStore
    from llmkit.train.export import forget_gguf_origin

    manifest = ModelStore().resolve(args.model)
    folder, name = str(manifest.weights_path.parent), manifest.weights_path.name
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder, gguf_file=name)
    model = transformers.AutoModelForCausalLM.from_pretrained(
        folder, gguf_file=name, dtype="float32"
    )
    # The weights are de-quantized floats already, as in llmkit; only transformers' record of the
    # GGUF origin makes the Trainer refuse them, so it is removed the same way llmkit's export does.
    forget_gguf_origin(model)
    rows = []
    for line in DATA.read_text().splitlines():
        messages = json.loads(line)["messages"]
        # The same loss as llmkit's: on the final assistant turn, given everything before it.
        rows.append({"prompt": messages[:-1], "completion": messages[-1:]})
    dataset = datasets.Dataset.from_list(rows)
    lora = peft.LoraConfig(
        r=args.lora_r, lora_alpha=2 * args.lora_r, lora_dropout=0.0, bias="none",
        target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        task_type="CAUSAL_LM",
    )  # fmt: skip
    with tempfile.TemporaryDirectory() as out:
        config = trl.SFTConfig(
            output_dir=out, max_steps=args.steps, per_device_train_batch_size=args.batch_size,
            learning_rate=2e-4, max_length=args.max_length, packing=False, report_to=[],
            save_strategy="no", logging_steps=args.steps, use_cpu=True, bf16=False,
            dataloader_num_workers=0, seed=0,
        )  # fmt: skip
        trainer = trl.SFTTrainer(
            model=model,
            args=config,
            train_dataset=dataset,
            processing_class=tokenizer,
            peft_config=lora,
        )
        lengths = [
            sum(1 for t in ids if t != tokenizer.pad_token_id)
            for ids in trainer.train_dataset["input_ids"]
        ]
        started = time.perf_counter()
        output = trainer.train()
        elapsed = time.perf_counter() - started
    # Rows seen: steps x batch, drawn from the dataset; their mean length stands for each one.
    tokens = args.steps * args.batch_size * (sum(lengths) / len(lengths))
    return {"tokens_per_second": tokens / elapsed, "final_loss": output.training_loss}


def worker(args: argparse.Namespace) -> None:
    if args.worker == "trl":
        result = run_trl(args)
    else:
        result = run_llmkit(args, packing=args.worker == "llmkit-packing")
    import resource

    # Linux reports the peak resident set in KiB.
    result["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print("RESULT " + json.dumps(result), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--lora-r", type=int, default=16)
    parser.add_argument("--configs", default=",".join(CONFIGS))
    parser.add_argument("--worker", choices=CONFIGS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return
    results = []
    for name in args.configs.split(","):
        command = [sys.executable, __file__, "--worker", name, "--model", args.model,
                   "--steps", str(args.steps), "--batch-size", str(args.batch_size),
                   "--max-length", str(args.max_length), "--lora-r", str(args.lora_r)]  # fmt: skip
        output = subprocess.run(command, capture_output=True, text=True).stdout
        line = next((row for row in output.splitlines() if row.startswith("RESULT ")), None)
        record = {"config": name, "ok": line is not None}
        if line:
            record.update(json.loads(line[len("RESULT ") :]))
        results.append(record)
    machine = {"cpus": os.cpu_count(), "python": sys.version.split()[0]}
    print(json.dumps({"settings": vars(args), "machine": machine, "results": results}, indent=2))


if __name__ == "__main__":
    main()
