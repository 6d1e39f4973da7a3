"""`llmkit doctor`: what this machine can do, and the command that fixes each problem found."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import platform
import re
import shutil
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from llmkit.plan.advice import HEADROOM
from llmkit.plan.catalog import catalog
from llmkit.plan.commands import command_line, plan_arguments
from llmkit.plan.feasibility import finetune_dtype, runs_on
from llmkit.plan.hardware import (
    GIB,
    Device,
    cpu_info,
    local_cpu,
    local_gpus,
    memory_info,
    nvidia_smi_gpus,
)
from llmkit.plan.memory import PlanRequest, estimate_memory

# The optional dependency groups in pyproject.toml and the modules that show each is installed.
EXTRAS = {
    "llamacpp": ("llama_cpp",),
    "torch": ("torch", "transformers", "gguf", "accelerate", "peft"),  # engine and fine-tuning
    "serve": ("fastapi", "uvicorn"),
    "plot": ("matplotlib",),
}
MIN_FREE_DISK = 10 * GIB
TORCH_CUDA_INSTALL = (
    "pip install --force-reinstall torch --index-url https://download.pytorch.org/whl/cu124"
)
LLAMA_CPP_CUDA_INSTALL = (
    'CMAKE_ARGS="-DGGML_CUDA=on" pip install --force-reinstall --no-cache-dir llama-cpp-python'
)


@dataclass
class Check:
    """One line of the report; `fix` is the command that solves a warning or failure."""

    area: str
    status: str  # "ok", "info", "warn" or "fail"
    detail: str
    fix: str | None = None
    data: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "area": self.area,
            "status": self.status,
            "detail": self.detail,
            "fix": self.fix,
            "data": self.data,
        }


def _has(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def _version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def check_system() -> list[Check]:
    cpu = cpu_info()
    checks = [
        Check("os", "info", f"{platform.system()} {platform.release()} ({platform.machine()})"),
        Check(
            "python",
            "ok" if sys.version_info >= (3, 10) else "fail",
            f"Python {platform.python_version()} at {sys.executable}",
            None
            if sys.version_info >= (3, 10)
            else "install Python 3.10 or newer (llmkit needs it)",
        ),
    ]
    flags = [name for name, present in cpu["features"].items() if present]
    is_x86 = cpu["architecture"] in ("x86_64", "amd64", "i686")
    cpu_ok = cpu["features"]["AVX2"] or not is_x86
    checks.append(
        Check(
            "cpu",
            "ok" if cpu_ok else "warn",
            f"{cpu['name']} · {cpu['cores']} cores · {', '.join(flags) or 'no AVX/NEON'}",
            None
            if cpu_ok
            else "without AVX2 llama.cpp runs several times slower; prefer a newer CPU or a GPU",
            cpu,
        )
    )
    total, available = memory_info()
    free = f", {available / GIB:.1f} GiB available" if available is not None else ""
    checks.append(
        Check(
            "ram",
            "ok" if total >= 8 * GIB else "warn",
            f"{total / GIB:.1f} GiB{free}",
            None
            if total >= 8 * GIB
            else "under 8 GiB only the smallest models run; close other programs",
            {"total_bytes": total, "available_bytes": available},
        )
    )
    checks.append(check_disk())
    return checks


def check_disk() -> Check:
    from llmkit.store.paths import llmkit_home

    home = llmkit_home()
    existing = next((folder for folder in (home, *home.parents) if folder.exists()), Path("/"))
    free = shutil.disk_usage(existing).free
    ok = free >= MIN_FREE_DISK
    return Check(
        "disk",
        "ok" if ok else "warn",
        f"{free / GIB:.1f} GiB free for LLMKIT_HOME ({home})",
        None if ok else "point LLMKIT_HOME at a larger disk: export LLMKIT_HOME=/path/with/space",
        {"home": str(home), "free_bytes": free},
    )


def check_gpus() -> list[Check]:
    gpus = nvidia_smi_gpus()
    if not gpus:
        return [
            Check("gpu", "info", "no NVIDIA GPU found (nvidia-smi is not on PATH or reports none)")
        ]
    return [
        Check(
            "gpu",
            "ok",
            f"{gpu.name} · {gpu.memory_bytes / GIB:.1f} GiB · driver {gpu.driver}",
            data={"name": gpu.name, "memory_bytes": gpu.memory_bytes, "driver": gpu.driver},
        )
        for gpu in gpus
    ]


def check_torch(has_gpu: bool) -> Check:
    if not _has("torch"):
        return Check(
            "pytorch",
            "info",
            "not installed (needed for fine-tuning and the torch engine)",
            "pip install 'llmkit[torch]'",
        )
    import torch

    cuda_build = torch.version.cuda
    sees_gpu = bool(cuda_build) and torch.cuda.is_available()
    data = {"version": torch.__version__, "cuda_build": cuda_build, "cuda_available": sees_gpu}
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        data["mps_available"] = True
    detail = f"torch {torch.__version__} · " + (
        f"CUDA {cuda_build} build" if cuda_build else "CPU-only build"
    )
    if sees_gpu:
        names = ", ".join(
            torch.cuda.get_device_name(index) for index in range(torch.cuda.device_count())
        )
        return Check("pytorch", "ok", f"{detail} · sees {names}", data=data)
    if has_gpu and not cuda_build:
        return Check(
            "pytorch", "warn", f"{detail}: it cannot use the GPU", TORCH_CUDA_INSTALL, data
        )
    if has_gpu:
        return Check(
            "pytorch",
            "warn",
            f"{detail} but CUDA is not available (driver too old?)",
            "nvidia-smi  # then update the driver",
            data,
        )
    return Check(
        "pytorch",
        "ok",
        detail + (" · Apple GPU (MPS) available" if data.get("mps_available") else ""),
        data=data,
    )


def llama_cpp_backends(system_info: str) -> list[str]:
    """The compute backends named in llama.cpp's system-info line, e.g. ['CPU', 'CUDA', 'BLAS']."""
    backends = ["CPU"]
    for name in ("CUDA", "Metal", "Vulkan", "BLAS", "SYCL", "HIP", "OpenCL"):
        if re.search(rf"\b{name}\b", system_info, re.IGNORECASE):
            backends.append(name)
    return backends


def check_llama_cpp(has_gpu: bool) -> Check:
    version = _version("llama_cpp_python")
    if version is None:
        return Check(
            "llama.cpp",
            "fail",
            "llama-cpp-python is not installed (the default engine)",
            "pip install 'llmkit[llamacpp]'",
        )
    try:
        import llama_cpp

        info = llama_cpp.llama_print_system_info()
        info = info.decode(errors="replace") if isinstance(info, bytes) else str(info)
    except Exception as error:  # a broken native build raises anything from OSError to RuntimeError
        return Check(
            "llama.cpp",
            "fail",
            f"llama-cpp-python {version} does not load: {error}",
            LLAMA_CPP_CUDA_INSTALL
            if has_gpu
            else "pip install --force-reinstall --no-cache-dir llama-cpp-python",
        )
    backends = llama_cpp_backends(info)
    data = {"version": version, "backends": backends, "system_info": info.strip()}
    detail = f"llama-cpp-python {version} · backends: {', '.join(backends)}"
    if has_gpu and "CUDA" not in backends:
        return Check(
            "llama.cpp",
            "warn",
            detail + ": built without CUDA, so it will not use the GPU",
            LLAMA_CPP_CUDA_INSTALL,
            data,
        )
    return Check("llama.cpp", "ok", detail, data=data)


def check_extras() -> list[Check]:
    checks = []
    for extra, modules in EXTRAS.items():
        missing = [module for module in modules if not _has(module)]
        if missing:
            checks.append(
                Check(
                    f"extra {extra}",
                    "info",
                    f"not installed (missing {', '.join(missing)})",
                    f"pip install 'llmkit[{extra}]'",
                )
            )
        else:
            checks.append(Check(f"extra {extra}", "ok", "installed"))
    return checks


def largest_models(device: Device) -> dict[str, dict[str, Any] | None]:
    """The largest catalog models this device can chat with (Q4_K_M, 4K context) and fine-tune
    (QLoRA and LoRA), each with the `llmkit plan` command that shows its plan; None when none fits
    or the task cannot run on the device (see feasibility.cuda_requirement)."""
    workloads = {
        "chat": PlanRequest(task="chat", dtype="q4_k_m", context=4096),
        # LoRA in the precision `llmkit finetune` uses here, so the answer is what it can train.
        "lora": PlanRequest(
            task="lora", dtype=finetune_dtype(device), seq_len=1024, grad_checkpointing=True
        ),
        "qlora": PlanRequest(task="qlora", seq_len=1024, grad_checkpointing=True),
    }
    entries = sorted(catalog().values(), key=lambda entry: entry.spec().parameters, reverse=True)
    found: dict[str, dict[str, Any] | None] = {}
    for label, request in workloads.items():
        found[label] = None
        if not runs_on(device.type, request.task, request.optimizer):
            continue
        request = replace(request, device_type=device.type)
        for entry in entries:
            spec = entry.spec()
            total = estimate_memory(spec, request).total
            if total <= device.memory_bytes * HEADROOM:
                found[label] = {
                    "model": entry.name,
                    "display": entry.display,
                    "parameters": spec.parameters,
                    "total_bytes": round(total),
                    "command": command_line("plan", plan_arguments(entry.name, request, device)),
                }
                break
    return found


def run_doctor() -> dict[str, Any]:
    """Every check, and the largest models the best device here can handle."""
    checks = check_system()
    gpu_checks = check_gpus()
    has_gpu = any(check.status == "ok" for check in gpu_checks)
    checks += gpu_checks
    checks.append(check_torch(has_gpu))
    checks.append(check_llama_cpp(has_gpu))
    checks += check_extras()
    gpus = local_gpus()
    device = gpus[0] if gpus else local_cpu()
    return {
        "checks": [check.to_json() for check in checks],
        "device": device.to_json(),
        "largest_models": largest_models(device),
        "problems": sum(check.status in ("warn", "fail") for check in checks),
    }
