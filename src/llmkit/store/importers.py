"""Models other tools already downloaded: an Ollama store, a Hugging Face cache, LM Studio's folder.

Each layout is read without being changed. `find_models` says what a folder holds, and
`import_found` enters one model into the llmkit store, as a link by default (the other tool's file
stays where it is and is not copied), with what the other tool knew about it: an Ollama model's
system prompt, parameters, opening messages and license. Ollama's template is Go template text,
which the Jinja renderer cannot run: it is kept for `show`, and the GGUF's own chat template (the
one the model was published with) renders prompts.

Names found on disk become store names only through `validate_model_name`, and digests read from
another tool's manifests address a blob only when they are plain hex, so no file a tool wrote can
make llmkit read or write outside the folders it was pointed at.
"""

from __future__ import annotations

import difflib
import json
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llmkit.errors import InvalidModelFileError, InvalidParameterError, ModelNotFoundError
from llmkit.store.hub import is_gguf_candidate, name_from_filename, split_part, store_name_for
from llmkit.store.paths import validate_model_name
from llmkit.store.recipes import make_recipe
from llmkit.store.store import ModelManifest, ModelStore, ProgressCallback
from llmkit.store.weights import check_hf_weights

SOURCES = ("ollama", "hf-cache", "lmstudio")
SOURCE_NAMES = {"ollama": "Ollama", "hf-cache": "Hugging Face cache", "lmstudio": "LM Studio"}
OLLAMA_LIBRARY = "registry.ollama.ai"
_OLLAMA_MEDIA = "application/vnd.ollama.image."
_DIGEST = re.compile(r"^sha256[:-]([0-9a-f]{64})$")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
# Manifests, parameters, system prompts and templates are small; a larger file is not one of them.
MAX_TEXT_BYTES = 1 << 20
GGUF_MAGIC = b"GGUF"


@dataclass(frozen=True)
class FoundModel:
    """One model another tool keeps, and how it would enter the store."""

    kind: str  # "ollama", "hf-cache" or "lmstudio"
    label: str  # what the other tool calls it: "llama3.2:1b", "OWNER/REPO/FILE.gguf", "OWNER/REPO"
    name: str  # the store name it gets unless another is given
    path: Path  # the GGUF file or the Hugging Face folder
    format: str  # "gguf" or "hf"
    size_bytes: int
    sha256: str | None = None  # the digest the tool stores the file under: not hashed again
    settings: dict[str, Any] = field(default_factory=dict)  # ModelManifest fields it carries
    problem: str | None = None  # why it cannot be imported; listed, never imported
    note: str | None = None  # what is left behind (a vision projector, say)

    @property
    def provenance(self) -> str:
        return f"{self.kind}:{self.label}"

    def matches(self, wanted: str) -> bool:
        """Whether the user's word names this model: its label, its store name, or for a repository
        of several files OWNER/REPO (every file) and OWNER/REPO:QUANT."""
        if wanted in (self.label, self.name) or f"{wanted}:latest" == self.label:
            return True
        if self.format == "gguf" and self.kind != "ollama":
            repo, _, quant = wanted.partition(":")
            return self.label.startswith(f"{repo}/") and (
                not quant or self.name.endswith(f":{quant.lower()}")
            )
        return False


# ---- where the tools keep their models --------------------------------------------------------
def default_folders(kind: str) -> list[Path]:
    """Where `kind` keeps models unless told otherwise, most likely first."""
    home = Path.home()
    if kind == "ollama":
        configured = os.environ.get("OLLAMA_MODELS")
        return [
            *([Path(configured).expanduser()] if configured else []),
            home / ".ollama" / "models",
            Path("/usr/share/ollama/.ollama/models"),  # the Linux service's own user
        ]
    if kind == "hf-cache":
        from huggingface_hub import constants

        return [Path(constants.HF_HUB_CACHE).expanduser()]
    if kind == "lmstudio":
        return [home / ".lmstudio" / "models", home / ".cache" / "lm-studio" / "models"]
    raise InvalidParameterError(_unknown_source(kind))


def detect_kind(folder: Path) -> tuple[str, Path] | None:
    """(kind, the folder to read) when `folder` is, or holds, one of the layouts."""
    candidates = [folder, folder / "models", folder / "hub"]
    for candidate in candidates:
        if (candidate / "manifests").is_dir() and (candidate / "blobs").is_dir():
            return "ollama", candidate
    for candidate in candidates:
        if candidate.name.startswith("models--") or any(candidate.glob("models--*")):
            return "hf-cache", candidate
    for candidate in candidates:
        if _publisher_repo_folders(candidate):
            return "lmstudio", candidate
    return None


def resolve_source(source: str) -> tuple[str, Path]:
    """(kind, folder) for `--from`: a kind (its usual folder) or a folder (its layout detected)."""
    if source in SOURCES:
        folders = default_folders(source)
        found = next((folder for folder in folders if folder.is_dir()), None)
        if found is None:
            where = " or ".join(str(folder) for folder in folders)
            raise ModelNotFoundError(
                f"No {SOURCE_NAMES[source]} models folder at {where}; "
                "pass its folder instead: --from PATH."
            )
        return source, found
    folder = Path(source).expanduser()
    if not folder.is_dir():
        raise InvalidParameterError(_unknown_source(source))
    detected = detect_kind(folder)
    if detected is None:
        raise InvalidModelFileError(
            f"{folder} holds no Ollama store (manifests/ and blobs/), Hugging Face cache "
            "(models--OWNER--REPO folders) or LM Studio models (PUBLISHER/REPO/*.gguf)."
        )
    return detected


def _unknown_source(source: str) -> str:
    return f"'{source}' is neither a folder nor one of {', '.join(SOURCES)}."


def find_models(kind: str, folder: Path) -> list[FoundModel]:
    """Everything importable (or listed with the reason it is not) in `folder`, a `kind` layout."""
    if kind == "ollama":
        return list(_ollama_models(folder))
    if kind == "hf-cache":
        return list(_hf_cache_models(folder))
    if kind == "lmstudio":
        return list(_lmstudio_models(folder))
    raise InvalidParameterError(_unknown_source(kind))


def select(found: list[FoundModel], wanted: Iterable[str]) -> list[FoundModel]:
    """The models the user named, in their order; an unknown or ambiguous word is one error."""
    chosen: list[FoundModel] = []
    for word in wanted:
        exact = [model for model in found if word in (model.label, model.name)]
        matches = exact or [model for model in found if model.matches(word)]
        if not matches:
            known = [model.label for model in found]
            close = difflib.get_close_matches(word, known, n=1, cutoff=0.5)
            hint = f" Did you mean '{close[0]}'?" if close else ""
            raise ModelNotFoundError(f"'{word}' is not among the models found.{hint}")
        usable = [model for model in matches if model.problem is None]
        if len(usable) > 1:
            labels = ", ".join(model.label for model in usable)
            raise InvalidParameterError(
                f"'{word}' names {len(usable)} models ({labels}); name one."
            )
        chosen.append((usable or matches)[0])
    return chosen


# ---- into the store -----------------------------------------------------------------------------
def already_imported(store: ModelStore, model: FoundModel, name: str | None = None) -> bool:
    """Whether NAME already holds this very model (imported before from the same place)."""
    name = name or model.name
    if not store.has(name):
        return False
    manifest = store.get(name)
    return manifest.source == model.provenance


def import_found(
    model: FoundModel,
    *,
    store: ModelStore,
    name: str | None = None,
    copy: bool = False,
    force: bool = False,
    allow_pickle: bool = False,
    progress: ProgressCallback | None = None,
) -> ModelManifest:
    """Enter `model` into the store under `name` (default: its own), linked unless `copy`."""
    if model.problem is not None:
        raise InvalidModelFileError(f"{model.label} cannot be imported: {model.problem}.")
    return store.import_model(
        model.path,
        validate_model_name(name or model.name),
        link=not copy,
        force=force,
        progress=progress,
        provenance=model.provenance,
        allow_pickle=allow_pickle,
        sha256=model.sha256,
        settings=model.settings,
    )


# ---- Ollama -------------------------------------------------------------------------------------
def _ollama_models(root: Path) -> Iterable[FoundModel]:
    manifests = root / "manifests"
    for path in sorted(manifests.rglob("*")):
        parts = path.relative_to(manifests).parts
        # REGISTRY/NAMESPACE/MODEL/TAG: registry.ollama.ai/library/llama3.2/1b, hf.co/OWNER/REPO/Q8_0
        if not path.is_file() or len(parts) < 4 or any(part.startswith(".") for part in parts):
            continue
        registry, *repository, tag = parts
        yield _ollama_model(root, path, registry, repository, tag)


def ollama_label(registry: str, repository: list[str], tag: str) -> str:
    """Ollama's own name: 'llama3.2:1b', 'user/model:tag', 'hf.co/OWNER/REPO:Q4_K_M'."""
    if registry == OLLAMA_LIBRARY:
        path = repository[1:] if repository[:1] == ["library"] else repository
        return f"{'/'.join(path)}:{tag}"
    return f"{registry}/{'/'.join(repository)}:{tag}"


def _ollama_name(repository: list[str], tag: str) -> str:
    """'llama3.2' + '1b' -> 'llama3.2:1b'; ':latest' is left out, as every name answers to it."""
    base = re.sub(r"[-_.]gguf$", "", repository[-1], flags=re.IGNORECASE)
    name = name_from_filename(base)
    word = name_from_filename(tag)[:31].strip("-._")
    return validate_model_name(name if tag == "latest" or not word else f"{name}:{word}")


def _ollama_model(
    root: Path, path: Path, registry: str, repository: list[str], tag: str
) -> FoundModel:
    label = ollama_label(registry, repository, tag)
    name = _ollama_name(repository, tag)

    def unusable(problem: str, size: int = 0, weights: Path = path) -> FoundModel:
        return FoundModel("ollama", label, name, weights, "gguf", size, problem=problem)

    try:
        layers = _read_json(path).get("layers")
    except InvalidModelFileError as error:
        return unusable(str(error))
    if not isinstance(layers, list):
        return unusable("its manifest lists no layers")
    blobs: dict[str, Path] = {}
    for layer in layers:
        if not isinstance(layer, dict) or not str(layer.get("mediaType", "")).startswith(
            _OLLAMA_MEDIA
        ):
            continue
        kind = str(layer["mediaType"]).removeprefix(_OLLAMA_MEDIA)
        digest = _DIGEST.match(str(layer.get("digest", "")))
        if digest is None:
            return unusable(f"its {kind} layer has no sha256 digest")
        blobs.setdefault(kind, root / "blobs" / f"sha256-{digest.group(1)}")
    weights = blobs.get("model")
    if weights is None:
        return unusable("it has no model layer")
    if not weights.is_file():
        return unusable("its weights are missing from blobs/ (an interrupted pull?)", 0, weights)
    size = weights.stat().st_size
    if not _is_gguf(weights):
        return unusable("its weights are not a GGUF file", size, weights)
    try:
        settings = _ollama_settings(blobs)
    except (InvalidModelFileError, InvalidParameterError) as error:
        return unusable(str(error).rstrip("."), size, weights)
    note = "its vision projector is left out (text only)" if "projector" in blobs else None
    digest_hex = weights.name.removeprefix("sha256-")
    return FoundModel("ollama", label, name, weights, "gguf", size, digest_hex, settings, note=note)


def _ollama_settings(blobs: dict[str, Path]) -> dict[str, Any]:
    """What an Ollama model carries besides its weights, as ModelManifest fields (checked the way a
    recipe's are)."""
    texts = {kind: _read_text(path) for kind, path in blobs.items() if kind != "model"
             and kind in ("params", "system", "template", "license", "messages")}  # fmt: skip
    try:
        options = json.loads(texts["params"]) if texts.get("params") else {}
        messages = json.loads(texts["messages"]) if texts.get("messages") else []
    except json.JSONDecodeError:
        options = messages = None
    if not isinstance(options, dict) or not isinstance(messages, list):
        raise InvalidModelFileError("its params or messages layer is not the JSON Ollama writes")
    recipe = make_recipe(
        "ollama",
        options=options,
        system=texts.get("system") or None,
        messages=[m for m in messages if isinstance(m, dict)],
        license=texts.get("license") or None,
    )
    adapter = blobs.get("adapter")
    settings: dict[str, Any] = {
        "parameters": recipe.parameters,
        "system_prompt": recipe.system,
        "messages": recipe.messages,
        "license": recipe.license,
        "ollama_template": texts.get("template") or None,
        "adapter": str(adapter) if adapter is not None and adapter.is_file() else None,
    }
    return {key: value for key, value in settings.items() if value}


# ---- the Hugging Face cache ---------------------------------------------------------------------
def _hf_cache_models(root: Path) -> Iterable[FoundModel]:
    folders = [root] if root.name.startswith("models--") else sorted(root.glob("models--*"))
    for folder in folders:
        repo = folder.name.removeprefix("models--").replace("--", "/", 1)
        snapshot = _snapshot(folder)
        if snapshot is not None:
            yield from _repository_models("hf-cache", repo, snapshot)


def _snapshot(folder: Path) -> Path | None:
    """The revision `main` points at, else the newest snapshot."""
    reference = folder / "refs" / "main"
    if reference.is_file():
        commit = reference.read_text(errors="replace").strip()
        if re.fullmatch(r"[0-9a-f]{40}", commit) and (folder / "snapshots" / commit).is_dir():
            return folder / "snapshots" / commit
    snapshots = [path for path in (folder / "snapshots").glob("*") if path.is_dir()]
    return max(snapshots, key=lambda path: path.stat().st_mtime, default=None)


# ---- LM Studio ----------------------------------------------------------------------------------
def _publisher_repo_folders(root: Path) -> list[Path]:
    if not root.is_dir():
        return []
    return sorted(
        repo
        for publisher in root.iterdir()
        if publisher.is_dir() and not publisher.name.startswith(".")
        for repo in publisher.iterdir()
        if repo.is_dir() and (any(repo.glob("*.gguf")) or (repo / "config.json").is_file())
    )


def _lmstudio_models(root: Path) -> Iterable[FoundModel]:
    for folder in _publisher_repo_folders(root):
        yield from _repository_models("lmstudio", f"{folder.parent.name}/{folder.name}", folder)


# ---- a repository's files (both the cache's snapshots and LM Studio's folders) --------------------
def _repository_models(kind: str, repo: str, folder: Path) -> Iterable[FoundModel]:
    """A folder's GGUF files, one model each, and the folder itself when it is a model folder."""
    for path in sorted(folder.rglob("*.gguf")):
        relative = path.relative_to(folder).as_posix()
        if not is_gguf_candidate(relative):
            continue
        split = split_part(relative)
        if split and split[0] != 1:
            continue  # one entry for a split model: its first part
        label = f"{repo}/{relative}"
        name = store_name_for(repo, relative)
        if not path.is_file():  # a cache symlink whose blob never arrived
            yield FoundModel(
                kind, label, name, path, "gguf", 0, problem="its download is incomplete"
            )
            continue
        size = path.stat().st_size
        problem = None
        if split:
            problem = f"it is split over {split[1]} files, which the store cannot keep yet"
        elif not _is_gguf(path):
            problem = "it is not a GGUF file"
        # The cache's snapshot entry links to blobs/SHA256 (for files kept in LFS, as GGUFs are).
        blob = Path(os.readlink(path)).name if path.is_symlink() else ""
        digest = blob if kind == "hf-cache" and _HEX64.match(blob) else None
        yield FoundModel(kind, label, name, path, "gguf", size, digest, problem=problem)
    if (folder / "config.json").is_file():
        yield _model_folder(kind, repo, folder)


def _model_folder(kind: str, repo: str, folder: Path) -> FoundModel:
    name = name_from_filename(repo.rsplit("/", 1)[-1])
    size = sum(path.stat().st_size for path in folder.rglob("*") if path.is_file())
    problem = note = None
    try:
        if check_hf_weights(folder, allow_pickle=True) == "pickle":
            note = "pickled weights: import with --allow-pickle if you trust them"
        config = _read_json(folder / "config.json")
        if "quantization" in config and "quantization_config" not in config:
            problem = "its weights are quantized for MLX, which llmkit's engines do not run"
    except InvalidModelFileError as error:
        problem = str(error).removeprefix(f"{folder} ").rstrip(".")
    return FoundModel(kind, repo, name, folder, "hf", size, problem=problem, note=note)


# ---- small readers --------------------------------------------------------------------------------
def _read_text(path: Path) -> str:
    if not path.is_file():
        raise InvalidModelFileError(f"{path.name} is missing")
    if path.stat().st_size > MAX_TEXT_BYTES:
        raise InvalidModelFileError(f"{path.name} is larger than a settings file can be")
    return path.read_bytes().decode("utf-8", errors="replace")


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(_read_text(path))
    except json.JSONDecodeError as error:
        raise InvalidModelFileError(f"{path.name} is not JSON") from error
    if not isinstance(data, dict):
        raise InvalidModelFileError(f"{path.name} is not a JSON object")
    return data


def _is_gguf(path: Path) -> bool:
    with path.open("rb") as handle:
        return handle.read(4) == GGUF_MAGIC
