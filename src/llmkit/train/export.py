"""Put a fine-tuned model into the store: LoRA adapter, merged GGUF (F16/Q8_0, or any format of
llama.cpp's quantizer) and merged HF folder.

Every file is written into a staging folder first; only when all of them are complete are they
moved into the store, each with one rename, so a failure leaves nothing half-written behind.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from llmkit.engines.llamacpp_quantize import quantize
from llmkit.store.gguf_meta import read_gguf_header
from llmkit.store.locking import OWNER_FILE
from llmkit.store.paths import model_directory
from llmkit.store.store import MANIFEST_FILE, ModelManifest, ModelStore
from llmkit.train.gguf_export import write_lora_gguf, write_merged_gguf
from llmkit.train.prepare import PreparedRun, check_export_names

GGUF_TYPES = {"f16": "F16", "q8_0": "Q8_0", "f32": "F32"}


# A base's weight format (ModelInfo.quantization: a GGUF type, or an HF folder's torch_dtype)
# -> the torch dtype of its Hugging Face export.
HF_DTYPES = {
    "F32": "float32", "float32": "float32", "F16": "float16", "float16": "float16",
    "BF16": "bfloat16", "bfloat16": "bfloat16",
}  # fmt: skip


def hf_dtype(manifest: ModelManifest) -> Any:
    """The torch dtype a merged HF export is saved in: the base's own float type; float16 for a
    quantized GGUF (whose scales llama.cpp stores in F16); float32 when the base says nothing."""
    import torch

    quantization = manifest.info.quantization or ""
    if quantization in HF_DTYPES:
        name = HF_DTYPES[quantization]
    else:
        name = "float16" if manifest.format == "gguf" and quantization else "float32"
    return getattr(torch, name)


def lora_matrices(model: Any) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """module path (Hugging Face names, e.g. model.layers.0.self_attn.q_proj) -> (A, B) as float32."""
    result = {}
    for name, module in model.get_base_model().named_modules():
        if hasattr(module, "lora_A") and "default" in getattr(module, "lora_A", {}):
            a = module.lora_A["default"].weight.detach().float().cpu().numpy()
            b = module.lora_B["default"].weight.detach().float().cpu().numpy()
            result[name] = (a, b)
    return result


def _heads(model: Any) -> tuple[int, int]:
    config = model.config
    heads = int(config.num_attention_heads)
    return heads, int(getattr(config, "num_key_value_heads", None) or heads)


def _adapter_manifest(prepared: PreparedRun, name: str, adapter: Path, size: int) -> ModelManifest:
    base = prepared.manifest
    return ModelManifest(
        name=name,
        path=str(base.weights_path),
        format="gguf",
        sha256=base.sha256,
        size_bytes=size,
        source=f"finetune:{base.name}",
        info=base.info,
        linked=True,
        template_override=prepared.config.template and prepared.template_tokens.template,
        adapter=str(adapter),
    )


def _install_adapter(store: ModelStore, prepared: PreparedRun, name: str, staged: Path) -> None:
    """The adapter's store entry: its own folder, with the manifest pointing at the base weights."""
    folder = model_directory(store.models_root, name)
    manifest = _adapter_manifest(prepared, name, folder / staged.name, staged.stat().st_size)
    entry = store.staging(folder.name)  # owner-marked, so a killed export is cleaned up later
    shutil.move(staged, entry / staged.name)
    (entry / MANIFEST_FILE).write_text(json.dumps(manifest.to_json(), indent=2))
    (entry / OWNER_FILE).unlink(missing_ok=True)
    with store.writing():
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(entry, folder)


def forget_gguf_origin(model: Any) -> None:
    """Make a model loaded from GGUF an ordinary float model (so it can be saved or trained).

    Its weights are de-quantized floats already, but transformers remembers the origin as a
    "quantizer" and refuses to save or train it; this removes that record the quantizer's own way.
    """
    quantizer = getattr(model, "hf_quantizer", None)
    if quantizer is not None:
        quantizer.remove_quantization_config(model)


def _gguf_file(names: dict[str, str], kind: str) -> str:
    # The F16 file the quantizer starts from, when F16 itself is not exported, is named apart.
    return f"{names[kind]}.gguf" if kind in names else f"{names['gguf']}.f16.gguf"


def export_run(prepared: PreparedRun, model: Any, log: Callable[[str], None]) -> dict[str, str]:
    """Write every requested export and move them into the store; return kind -> store name."""
    config, store = prepared.config, prepared.store
    names = prepared.export_names
    check_export_names(store, names, config.force)  # a name may have been taken while training
    store.models_root.mkdir(parents=True, exist_ok=True)
    staging = store.staging("finetune")
    base_gguf = prepared.manifest.weights_path
    template = prepared.template_tokens.template
    try:
        heads, kv_heads = _heads(model)
        staged: dict[str, Path] = {}
        if "adapter" in names:
            log("Writing the LoRA adapter as GGUF…")
            staged["adapter"] = write_lora_gguf(
                base_gguf, lora_matrices(model), staging / "adapter.gguf",
                alpha=config.lora_alpha, heads=heads, kv_heads=kv_heads,
            )  # fmt: skip
        merged = model.merge_and_unload() if hasattr(model, "merge_and_unload") else model
        # The quantized export starts from an F16 file, as llama.cpp's own converter gives it.
        wanted_gguf = [kind for kind in names if kind in GGUF_TYPES]
        if "gguf" in names and "f16" not in names:
            wanted_gguf.append("f16")
        if wanted_gguf:
            state = {k: v.detach().float().cpu().numpy() for k, v in merged.state_dict().items()}
            for kind in wanted_gguf:
                log(f"Writing the merged model as {GGUF_TYPES[kind]} GGUF…")
                staged[kind] = write_merged_gguf(
                    base_gguf, state, staging / _gguf_file(names, kind),
                    tensor_type=GGUF_TYPES[kind], heads=heads, kv_heads=kv_heads,
                    chat_template=template if config.template else None,
                    name=names.get(kind, names.get("gguf")),
                )  # fmt: skip
            parameters = sum(int(values.size) for values in state.values())
            del state
            if "gguf" in names:
                log(f"Quantizing the merged model to {config.gguf_quant} (llama.cpp)…")
                source = staged["f16"] if "f16" in names else staged.pop("f16")
                staged["gguf"] = quantize(
                    source, staging / f"{names['gguf']}.gguf", config.gguf_quant,
                    parameters=parameters, threads=config.threads,
                )  # fmt: skip
                if "f16" not in names:
                    source.unlink()
        if "hf" in names:
            log("Writing the merged model as Hugging Face safetensors…")
            folder = staging / "hf"
            forget_gguf_origin(merged)
            # Training ran in float32 (on a CPU) or bfloat16; the export keeps the base's own
            # precision, so it is no larger than the model it came from.
            merged.to(hf_dtype(prepared.manifest))
            merged.save_pretrained(folder, safe_serialization=True)
            if template is not None:
                prepared.tokenizer.chat_template = template
            prepared.tokenizer.save_pretrained(folder)
            staged["hf"] = folder
        for path in staged.values():
            if path.is_file():
                read_gguf_header(path)  # a broken file stops here, before the store is touched
        provenance = f"finetune:{prepared.manifest.name}"
        with store.writing():  # the lock is re-entrant: the imports below take it again
            check_export_names(store, names, config.force)  # checked again under the lock
            for kind, path in staged.items():
                if kind == "adapter":
                    _install_adapter(store, prepared, names[kind], path)
                else:
                    store.import_model(
                        path, names[kind], move=True, force=True, provenance=provenance
                    )
        return names
    finally:
        shutil.rmtree(staging, ignore_errors=True)
