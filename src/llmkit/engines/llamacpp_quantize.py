"""Re-quantize a GGUF file with llama.cpp's own quantizer, through llama-cpp-python.

`llama_model_quantize` needs no compiled tools. It reports no progress of its own, so progress is
read from the size of the file it writes against the size it is expected to reach.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

from llmkit.errors import InvalidParameterError, LlmkitError

# The formats offered, with their average bits per weight (llama.cpp's figures for Llama models),
# which give the expected size of the output for the progress bar.
FORMATS = {
    "Q4_0": 4.5,
    "Q4_1": 5.0,
    "Q5_0": 5.5,
    "Q5_1": 6.0,
    "Q8_0": 8.5,
    "Q2_K": 2.6,
    "Q3_K_M": 3.9,
    "Q4_K_S": 4.6,
    "Q4_K_M": 4.9,
    "Q5_K_S": 5.5,
    "Q5_K_M": 5.7,
    "Q6_K": 6.6,
    # Non-linear 4-bit grids; like Q4_0, llama.cpp repacks them for the CPU's wide kernels.
    "IQ4_NL": 4.5,
    "IQ4_XS": 4.25,
}


def check_format(name: str) -> str:
    wanted = name.strip().upper()
    if wanted not in FORMATS:
        raise InvalidParameterError(
            f"Unknown quantization {name!r}; choose one of {', '.join(FORMATS)}."
        )
    return wanted


def quantize(
    source: Path,
    target: Path,
    fmt: str,
    *,
    parameters: int,
    threads: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> Path:
    """Write `source` quantized to `fmt` at `target`; `parameters` sizes the progress estimate."""
    from llmkit.engines.llamacpp import bindings

    llama_cpp = bindings()
    fmt = check_format(fmt)
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{fmt}")
    params.nthread = threads or os.cpu_count() or 1
    params.allow_requantize = True  # the built-in model ships quantized already
    expected = max(1, int(parameters * FORMATS[fmt] / 8))
    outcome: dict[str, int | BaseException] = {}

    def work() -> None:
        try:
            outcome["status"] = llama_cpp.llama_model_quantize(
                str(source).encode(), str(target).encode(), params
            )
        except BaseException as error:  # reported on the caller's thread
            outcome["error"] = error

    worker = threading.Thread(target=work, name="llmkit-quantize", daemon=True)
    worker.start()
    while worker.is_alive():
        worker.join(0.2)
        if progress is not None and target.exists():
            progress(min(target.stat().st_size, expected - 1), expected)
        time.sleep(0)
    if "error" in outcome:
        raise LlmkitError(f"Quantizing failed: {outcome['error']}")
    if outcome.get("status") != 0 or not target.exists():
        target.unlink(missing_ok=True)
        raise LlmkitError(
            f"llama.cpp could not quantize {source.name} to {fmt} (status {outcome.get('status')})."
        )
    if progress is not None:
        progress(expected, expected)
    return target
