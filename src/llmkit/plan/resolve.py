"""Turn what the user typed (a file, an HF folder, a store model or a catalog name) into a ModelSpec."""

from __future__ import annotations

import json
from pathlib import Path

from llmkit.errors import InvalidModelFileError, LlmkitError, ModelNotFoundError
from llmkit.plan.catalog import closest_catalog_names, find_catalog_entry
from llmkit.plan.spec import ModelSpec, spec_from_gguf, spec_from_hf_config


def spec_from_path(path: Path) -> ModelSpec:
    """A GGUF file, or a Hugging Face folder with a config.json."""
    if path.is_dir():
        config_file = path / "config.json"
        if not config_file.exists():
            raise InvalidModelFileError(
                f"{path} has no config.json; it is not a Hugging Face model folder."
            )
        try:
            config = json.loads(config_file.read_text())
        except json.JSONDecodeError as error:
            raise InvalidModelFileError(
                f"{config_file} is not valid JSON ({error.msg})."
            ) from error
        return spec_from_hf_config(config, name=path.name, source=f"path:{path}")
    from llmkit.store.gguf_meta import read_gguf_header

    return spec_from_gguf(read_gguf_header(path), name=path.stem, source=f"path:{path}")


def _spec_from_store(name: str) -> ModelSpec | None:
    """The spec of a model in the local store, or None when the store has no such model."""
    from llmkit.store.store import ModelStore

    try:
        manifest = ModelStore().get(name)
    except LlmkitError:
        return None
    weights = Path(manifest.path)
    if manifest.format == "hf":
        return spec_from_path(weights)
    from llmkit.store.gguf_meta import read_gguf_header

    return spec_from_gguf(read_gguf_header(weights), name=name, source=f"store:{name}")


def resolve_model(text: str) -> ModelSpec:
    """The spec for MODEL: a path, then a store model, then the catalog; unknown names get suggestions."""
    candidate = Path(text).expanduser()
    if "/" in text or text.endswith(".gguf") or candidate.exists():
        if candidate.exists():
            return spec_from_path(candidate)
        if text.endswith(".gguf") or text.startswith((".", "/", "~")):
            raise InvalidModelFileError(f"Model file {candidate} does not exist.")
    store_spec = _spec_from_store(text)
    if store_spec is not None:
        return store_spec
    entry = find_catalog_entry(text)
    if entry is not None:
        return entry.spec()
    close = closest_catalog_names(text)
    hint = f" Did you mean {', '.join(repr(name) for name in close)}?" if close else ""
    raise ModelNotFoundError(
        f"Unknown model '{text}': not a file, not in the store and not in the catalog.{hint} "
        "See `llmkit plan --list` for the catalog."
    )
