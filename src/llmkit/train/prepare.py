"""Everything checked before training starts: the base model, its template, the data, the names.

A run fails here, in a second or two and with one clear sentence, rather than after the model has
loaded or half the steps have run. Nothing is written anywhere by this module.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmkit.chat.template import end_of_turn_text, select_template, template_argument
from llmkit.errors import (
    InvalidModelFileError,
    InvalidParameterError,
    LlmkitError,
    require_module,
)
from llmkit.store.store import ModelManifest, ModelStore
from llmkit.store.weights import check_hf_weights
from llmkit.train.config import FinetuneConfig, default_exports
from llmkit.train.data import DataError, Example, read_jsonl, split_for_eval
from llmkit.train.masks import LengthReport, TemplateTokens, TokenizedExample, tokenize_dataset

GGUF_EXPORT_ARCHITECTURES = ("llama",)


@dataclass
class PreparedRun:
    config: FinetuneConfig
    store: ModelStore
    manifest: ModelManifest
    template_tokens: TemplateTokens
    template_source: str | None
    tokenizer: Any
    train: list[TokenizedExample]
    eval: list[TokenizedExample]
    length_report: LengthReport
    export_names: dict[str, str]
    fingerprint: str

    @property
    def pad_id(self) -> int:
        for candidate in (self.tokenizer.pad_token_id, self.template_tokens.eos_id):
            if candidate is not None:
                return int(candidate)
        return 0

    def detokenize(self, ids: Any) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=False)


def model_folder_arguments(manifest: ModelManifest) -> tuple[str, dict[str, Any]]:
    """(folder, keyword arguments) for transformers' from_pretrained, for a GGUF file or HF folder.

    An HF folder must hold safetensors weights, unless the user allowed pickles for this model
    (`import --allow-pickle` or `finetune --allow-pickle`): loading a pickle can run its code.
    """
    path = manifest.weights_path
    if manifest.format == "gguf":
        require_module("gguf", feature="Fine-tuning a GGUF model", extra="torch")
        return str(path.parent), {"gguf_file": path.name}
    kind = check_hf_weights(path, allow_pickle=manifest.allow_pickle)
    return str(path), {"use_safetensors": kind == "safetensors"}


def load_tokenizer(manifest: ModelManifest) -> Any:
    transformers = require_module("transformers", feature="Fine-tuning", extra="torch")
    folder, arguments = model_folder_arguments(manifest)
    arguments.pop("use_safetensors", None)  # a model-loading option; tokenizers hold no weights
    try:
        return transformers.AutoTokenizer.from_pretrained(folder, **arguments)
    except (OSError, ValueError) as error:
        raise InvalidModelFileError(
            f"transformers could not load the tokenizer of {manifest.path}: {error}"
        ) from error


def template_tokens(
    manifest: ModelManifest, override: str | None, tokenizer: Any
) -> tuple[TemplateTokens, str | None]:
    info = manifest.info
    chosen = select_template(
        info,
        recipe_override=manifest.template_override,
        override=template_argument(override) if override else None,
    )
    template = chosen[1] if chosen else None
    bos, eos = info.bos_token, info.eos_token
    end_of_turn = (
        end_of_turn_text(template, bos_token=bos, eos_token=eos, special_tokens=info.special_tokens)
        if template
        else None
    )

    def token_id(text: str | None) -> int | None:
        if text is None:
            return None
        found = tokenizer.convert_tokens_to_ids(text)
        return found if isinstance(found, int) and found != tokenizer.unk_token_id else None

    tokens = TemplateTokens(
        template=template,
        bos_token=bos,
        eos_token=eos,
        end_of_turn=end_of_turn,
        bos_id=token_id(bos),
        eos_id=token_id(eos) or token_id(end_of_turn),
        add_bos=bool(info.add_bos_token),
    )
    return tokens, chosen[0] if chosen else None


def _read_examples(config: FinetuneConfig) -> tuple[list[Example], list[Example]]:
    train = read_jsonl(config.data)
    if config.eval_data:
        return train, read_jsonl(config.eval_data)
    if config.eval_split:
        return split_for_eval(train, config.eval_split, config.seed)
    return train, []


def _data_digest(config: FinetuneConfig) -> str:
    digest = hashlib.sha256()
    for path in (config.data, config.eval_data):
        if path:
            digest.update(Path(path).expanduser().read_bytes())
    return digest.hexdigest()[:16]


def check_export_names(store: ModelStore, names: dict[str, str], force: bool) -> None:
    taken = [name for name in names.values() if name in store.names()]
    if taken and not force:
        raise InvalidParameterError(
            f"The store already has {', '.join(repr(n) for n in taken)}; choose another --out or pass --force to replace."
        )


def prepare_run(
    config: FinetuneConfig, home: str | Path | None = None, *, check_names: bool = True
) -> PreparedRun:
    """Check the settings, the base model and every data row; raise before anything is written."""
    config.validated()
    store = ModelStore(home)
    manifest = store.resolve(config.base)
    if manifest.format == "hf":
        # Refuse pickled weights now, in one sentence, rather than in torch's loader later.
        manifest.allow_pickle = manifest.allow_pickle or config.allow_pickle
        check_hf_weights(manifest.weights_path, allow_pickle=manifest.allow_pickle)
    if manifest.adapter:
        raise InvalidParameterError(
            f"'{config.base}' is itself a LoRA adapter; fine-tune its base model, or a merged export."
        )
    architecture = manifest.info.architecture
    gguf_base = manifest.format == "gguf" and architecture in GGUF_EXPORT_ARCHITECTURES
    config.exports = config.exports or default_exports(config.method, gguf_base, config.quant)
    if not gguf_base and any(kind != "hf" for kind in config.exports):
        raise InvalidParameterError(
            f"GGUF export supports {', '.join(GGUF_EXPORT_ARCHITECTURES)} GGUF base models and "
            f"'{config.base}' is {architecture or 'unknown'} ({manifest.format}); use --export hf."
        )
    export_names = config.export_names()
    if check_names:
        check_export_names(store, export_names, config.force)
    examples, eval_examples = _read_examples(config)
    needs_template = any(example.text is None for example in examples + eval_examples)
    tokenizer = load_tokenizer(manifest)
    tokens, source = template_tokens(manifest, config.template, tokenizer)
    if needs_template and tokens.template is None:
        raise InvalidParameterError(
            f"'{config.base}' has no chat template and none of the built-in ones fits its tokens; "
            "give one with --template (a built-in name or a template file)."
        )

    def tokenize(text: str) -> list[int]:
        return list(tokenizer(text, add_special_tokens=False)["input_ids"])

    train, report = tokenize_dataset(
        examples, tokens, tokenize, max_length=config.max_length, too_long=config.too_long
    )
    evaluation: list[TokenizedExample] = []
    if eval_examples:
        try:
            evaluation, _ = tokenize_dataset(
                eval_examples, tokens, tokenize, max_length=config.max_length, too_long="truncate"
            )
        except DataError as error:
            raise DataError(f"Evaluation data: {error}") from error
    fingerprint = hashlib.sha256(
        f"{config.fingerprint()}:{_data_digest(config)}".encode()
    ).hexdigest()[:16]
    return PreparedRun(
        config,
        store,
        manifest,
        tokens,
        source,
        tokenizer,
        train,
        evaluation,
        report,
        export_names,
        fingerprint,
    )


def check_memory(prepared: PreparedRun, device_type: str, shards: int = 1) -> None:
    """Refuse a run the planner says cannot fit, naming how much it needs and how much is free
    (per process; under FSDP the weights, gradients and optimizer state are split SHARDS ways)."""
    from llmkit.plan.memory import PlanRequest, estimate_memory, gib
    from llmkit.plan.spec import spec_from_gguf
    from llmkit.store.gguf_meta import read_gguf_header

    config, manifest = prepared.config, prepared.manifest
    if manifest.format != "gguf":
        return
    try:
        spec = spec_from_gguf(
            read_gguf_header(manifest.weights_path), name=manifest.name, source="store"
        )
        request = PlanRequest(
            task=config.method,
            dtype="fp32" if device_type == "cpu" else "bf16",
            batch_size=config.batch_size,
            seq_len=config.max_length,
            lora_r=config.lora_r,
            lora_targets=config.lora_targets,
            grad_checkpointing=config.gradient_checkpointing,
            device_type=device_type,
            fsdp=shards,
        )
        needed = estimate_memory(spec, request).total
    except LlmkitError:
        return  # the planner does not know this model; training will find out for itself
    available = _free_memory(device_type)
    if available is not None and needed > available:
        raise InvalidParameterError(
            f"Fine-tuning '{manifest.name}' this way needs about {gib(needed)} but only "
            f"{gib(available)} is free; lower --batch-size or --max-length, or use "
            "--gradient-checkpointing (see `llmkit plan`)."
        )


def _free_memory(device_type: str) -> int | None:
    if device_type.startswith("cuda"):
        import torch

        return int(torch.cuda.mem_get_info()[0])
    from llmkit.system_memory import memory_info

    return memory_info()[1]
