"""Devices a plan is checked against: well-known GPUs, a memory size, or this machine (CPU and GPUs)."""

from __future__ import annotations

import difflib
import os
import platform
import re
import shutil
import subprocess
from dataclasses import asdict, dataclass, field
from typing import Any

from llmkit.errors import InvalidParameterError
from llmkit.system_memory import memory_info

MIB = 1024**2
GIB = 1024**3


@dataclass(frozen=True)
class Device:
    """Where the model would run: its memory and, for time estimates, its dense 16-bit peak."""

    name: str
    type: str  # "cpu" or "cuda"
    memory_bytes: int
    tflops: float | None = None  # vendor peak, dense bf16/fp16 tensor-core TFLOPS
    bf16: bool = True
    detected: bool = False  # found on this machine rather than named

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


# Memory as nvidia-smi reports it (what a program can allocate is a little less).
KNOWN_GPUS: dict[str, Device] = {
    device.name.lower(): device
    for device in (
        Device("T4", "cuda", 15360 * MIB, 65, bf16=False),
        Device("A10G", "cuda", 23028 * MIB, 125),
        Device("L4", "cuda", 23034 * MIB, 121),
        Device("RTX-3090", "cuda", 24576 * MIB, 71),
        Device("RTX-4090", "cuda", 24564 * MIB, 165),
        Device("A100-40", "cuda", 40960 * MIB, 312),
        Device("A100-80", "cuda", 81920 * MIB, 312),
        Device("H100", "cuda", 81559 * MIB, 989),
        Device("H200", "cuda", 143771 * MIB, 989),
    )
}
_SIZE = re.compile(r"^(?:(cpu|gpu):)?\s*(\d+(?:\.\d+)?)\s*(g|gb|gib|t|tb|tib|m|mb|mib)?$")


def resolve_device(text: str) -> Device:
    """'cpu', 'auto', a GPU name ('T4', 'a100-80'), or a size ('24GB' for a GPU, 'cpu:64GB')."""
    key = text.strip().lower().replace(" ", "").replace("_", "-")
    if key == "cpu":
        return local_cpu()
    if key == "auto":
        gpus = local_gpus()
        return gpus[0] if gpus else local_cpu()
    if key in KNOWN_GPUS:
        return KNOWN_GPUS[key]
    aliases = {"a100": "a100-80", "a100-40gb": "a100-40", "a100-80gb": "a100-80", "h100-80": "h100"}
    if key in aliases:
        return KNOWN_GPUS[aliases[key]]
    match = _SIZE.match(key)
    if match:
        kind, number, unit = match.groups()
        scale = {"t": 1024**4, "m": MIB}.get((unit or "g")[0], GIB)
        size = int(float(number) * scale)
        if size <= 0:
            raise InvalidParameterError(f"The device memory must be positive, not '{text}'.")
        if kind == "cpu":
            return Device(f"CPU with {text.split(':', 1)[1]}", "cpu", size)
        return Device(f"GPU with {text.removeprefix('gpu:')}", "cuda", size)
    close = difflib.get_close_matches(key, [*KNOWN_GPUS, "cpu", "auto"], n=2, cutoff=0.5)
    hint = (
        f" Did you mean {' or '.join(repr(KNOWN_GPUS[c].name if c in KNOWN_GPUS else c) for c in close)}?"
        if close
        else ""
    )
    names = ", ".join(device.name for device in KNOWN_GPUS.values())
    raise InvalidParameterError(
        f"Unknown device '{text}'.{hint} Use cpu, auto, {names}, or a memory size such as 24GB."
    )


# ---- this machine --------------------------------------------------------------------------
def local_cpu() -> Device:
    total, _ = memory_info()
    return Device(f"this machine's CPU ({total / GIB:.0f} GiB RAM)", "cpu", total, detected=True)


def cpu_info() -> dict[str, Any]:
    """Model name, core count and the vector instruction sets llama.cpp and PyTorch use."""
    name, flags = platform.processor() or platform.machine(), set()
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                label, _, value = line.partition(":")
                label = label.strip()
                if label in ("model name", "Model") and name in (
                    "",
                    platform.machine(),
                    platform.processor(),
                ):
                    name = value.strip()
                if label in ("flags", "Features"):
                    flags.update(value.split())
    except OSError:
        pass
    machine = platform.machine().lower()
    features = {
        "AVX": "avx" in flags,
        "AVX2": "avx2" in flags,
        "AVX512": any(flag.startswith("avx512f") for flag in flags),
        "NEON": "asimd" in flags
        or "neon" in flags
        or (machine in ("arm64", "aarch64") and platform.system() == "Darwin"),
    }
    return {
        "name": name,
        "cores": os.cpu_count() or 1,
        "architecture": machine,
        "features": features,
    }


@dataclass
class GpuInfo:
    name: str
    memory_bytes: int
    driver: str | None = None
    cuda: str | None = None
    source: str = "nvidia-smi"
    extra: dict[str, Any] = field(default_factory=dict)


def nvidia_smi_gpus() -> list[GpuInfo]:
    """GPUs the NVIDIA driver reports; empty without nvidia-smi (so without an NVIDIA driver)."""
    executable = shutil.which("nvidia-smi")
    if executable is None:
        return []
    try:
        output = subprocess.run(
            [
                executable,
                "--query-gpu=name,memory.total,driver_version",
                "--format=csv,noheader,nounits",
            ],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    gpus = []
    for line in output.strip().splitlines():
        parts = [part.strip() for part in line.split(",")]
        if len(parts) >= 3 and parts[1].isdigit():
            gpus.append(GpuInfo(parts[0], int(parts[1]) * MIB, driver=parts[2]))
    return gpus


def local_gpus() -> list[Device]:
    """This machine's CUDA GPUs as plan devices, largest first (peak TFLOPS looked up by name)."""
    devices = []
    for gpu in nvidia_smi_gpus():
        known = next(
            (d for key, d in KNOWN_GPUS.items() if key.split("-")[0] in gpu.name.lower()), None
        )
        devices.append(
            Device(
                gpu.name,
                "cuda",
                gpu.memory_bytes,
                tflops=known.tflops if known else None,
                bf16=known.bf16 if known else True,
                detected=True,
            )
        )
    return sorted(devices, key=lambda device: -device.memory_bytes)
