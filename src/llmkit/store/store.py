"""The model store: one folder per model under LLMKIT_HOME/models, each with a manifest.json.

The manifest is the single source of truth about a model: where its weights are, their sha256, what
the GGUF header says (cached, so listing is instant), template override, defaults and provenance.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from llmkit.errors import (
    InvalidModelFileError,
    InvalidParameterError,
    LlmkitError,
    ModelNotFoundError,
)
from llmkit.store.catalog import BUILTIN_MODELS, BuiltinModel
from llmkit.store.gguf_meta import GGUFHeader, read_gguf_header
from llmkit.store.locking import OWNER_FILE, staging_directory, store_lock
from llmkit.store.model_info import ModelInfo
from llmkit.store.paths import llmkit_home, model_directory, validate_model_name
from llmkit.store.recipes import Recipe
from llmkit.store.space import (
    disk_full_error,
    ensure_free_space,
    human_bytes,
    is_disk_full,
)
from llmkit.store.weights import check_hf_weights

MANIFEST_FILE = "manifest.json"
ProgressCallback = Callable[[int, int], None]


@dataclass
class ModelManifest:
    """Everything llmkit knows about one model in the store."""

    name: str
    path: str  # the weights: a GGUF file, or an HF directory
    format: str  # "gguf" or "hf"
    sha256: str
    size_bytes: int
    source: str  # "builtin:<package>", "import:<path>", "hf:<owner>/<repo>/<file>"
    info: ModelInfo = field(default_factory=ModelInfo)
    linked: bool = False
    created: float = field(default_factory=time.time)
    template_override: str | None = None
    system_prompt: str | None = None
    parameters: dict[str, Any] = field(default_factory=dict)
    adapter: str | None = None
    # The user imported pickled weights with --allow-pickle; loaders honour it for this model.
    allow_pickle: bool = False
    # `llmkit tune` chose another weight format for this machine: {"path", "format", "reason"}.
    # The original file stays; NAME:original names it.
    variant: dict[str, str] | None = None
    # A recipe (`llmkit create`): the model it was made from, opening messages, its own license.
    base: str | None = None
    messages: list[dict[str, str]] = field(default_factory=list)
    license: str | None = None
    # An Ollama model's Go template, kept from `llmkit import --from ollama` for `show`; never run
    # (the GGUF's own Jinja template, or template_override, is what renders prompts).
    ollama_template: str | None = None

    def __post_init__(self) -> None:
        if isinstance(self.info, dict):  # as read from JSON
            object.__setattr__(self, "info", ModelInfo.from_dict(self.info))

    @property
    def weights_path(self) -> Path:
        """The file the engines load: the tuned variant when there is one."""
        return Path(self.variant["path"] if self.variant else self.path)

    def original(self) -> ModelManifest:
        """This model as published, without a tuned variant."""
        return replace(self, variant=None) if self.variant else self

    @property
    def chat_template(self) -> str | None:
        return self.template_override or self.info.chat_template

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ModelManifest:
        known = {key: value for key, value in data.items() if key in cls.__dataclass_fields__}
        return cls(**known)


def describe_gguf(header: GGUFHeader) -> ModelInfo:
    """The facts `show` prints, read once from the header and cached in the manifest."""
    tokens = header.get("tokenizer.ggml.tokens") or []
    token_types = header.get("tokenizer.ggml.token_type") or []
    # Control tokens (type 3) and user-defined ones (type 4) are the specials a template may emit.
    special_tokens = {
        text: index for index, (text, kind) in enumerate(zip(tokens, token_types)) if kind in (3, 4)
    }
    gemma3 = str(header.architecture).startswith("gemma3")
    return ModelInfo(
        architecture=header.architecture,
        model_name=header.get("general.name"),
        parameters=header.parameter_count,
        layers=header.arch_value("block_count"),
        heads=header.arch_value("attention.head_count"),
        kv_heads=header.arch_value("attention.head_count_kv"),
        head_dim=header.arch_value("attention.key_length"),
        embedding_length=header.arch_value("embedding_length"),
        feed_forward_length=header.arch_value("feed_forward_length"),
        context_length=header.arch_value("context_length"),
        vocab_size=header.arch_value("vocab_size") or len(tokens) or None,
        quantization=header.quantization,
        bos_token=header.token_text(header.get("tokenizer.ggml.bos_token_id")),
        eos_token=header.token_text(header.get("tokenizer.ggml.eos_token_id")),
        eot_token=header.token_text(header.get("tokenizer.ggml.eot_token_id")),
        add_bos_token=header.get("tokenizer.ggml.add_bos_token"),
        tokenizer=header.get("tokenizer.ggml.model"),
        special_tokens=special_tokens,
        chat_template=header.get("tokenizer.chat_template"),
        license=header.get("general.license"),
        # llama.cpp keeps only the window in a sliding-window layer's cache.
        sliding_window=header.arch_value("attention.sliding_window") if gemma3 else None,
        global_layer_every=6 if gemma3 else 0,
    )


def describe_hf_directory(folder: Path) -> ModelInfo:
    """The same facts for a Hugging Face model folder, from config.json and tokenizer_config.json."""
    config = json.loads((folder / "config.json").read_text())
    tokenizer_config_path = folder / "tokenizer_config.json"
    tokenizer_config = (
        json.loads(tokenizer_config_path.read_text()) if tokenizer_config_path.exists() else {}
    )

    def token(value: Any) -> str | None:
        return value.get("content") if isinstance(value, dict) else value

    template = tokenizer_config.get("chat_template")
    template_file = folder / "chat_template.jinja"
    if template is None and template_file.exists():
        template = template_file.read_text()
    if isinstance(config.get("text_config"), dict):  # a multimodal model: its text part
        config = {**config, **config["text_config"]}
    heads = config.get("num_attention_heads")
    return ModelInfo(
        architecture=(config.get("architectures") or [config.get("model_type")])[0],
        model_name=config.get("_name_or_path"),
        parameters=None,
        layers=config.get("num_hidden_layers"),
        heads=heads,
        kv_heads=config.get("num_key_value_heads", heads),
        head_dim=config.get("head_dim"),
        embedding_length=config.get("hidden_size"),
        feed_forward_length=config.get("intermediate_size"),
        context_length=config.get("max_position_embeddings"),
        vocab_size=config.get("vocab_size"),
        quantization=str(config.get("torch_dtype") or config.get("dtype") or "unknown"),
        bos_token=token(tokenizer_config.get("bos_token")),
        eos_token=token(tokenizer_config.get("eos_token")),
        eot_token=None,
        add_bos_token=tokenizer_config.get("add_bos_token"),
        tokenizer=tokenizer_config.get("tokenizer_class"),
        special_tokens={},
        chat_template=template if isinstance(template, str) else None,
        license=None,
    )


def sha256_of(path: Path, progress: ProgressCallback | None = None) -> str:
    digest = hashlib.sha256()
    total = path.stat().st_size
    done = 0
    with path.open("rb") as handle:
        while block := handle.read(4 << 20):
            digest.update(block)
            done += len(block)
            if progress:
                progress(done, total)
    return digest.hexdigest()


def _sha256_of_directory(folder: Path) -> str:
    digest = hashlib.sha256()
    for file in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(str(file.relative_to(folder)).encode())
        digest.update(sha256_of(file).encode())
    return digest.hexdigest()


def _write_json_atomically(path: Path, data: dict[str, Any]) -> None:
    """Write a temporary file and rename it into place; on any failure no temporary file is left."""
    text = json.dumps(data, indent=2)
    temporary: Path | None = None
    try:
        descriptor, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        temporary = Path(name)
        with os.fdopen(descriptor, "w") as handle:
            handle.write(text)
        os.replace(temporary, path)
    except OSError as error:
        if temporary is not None:
            temporary.unlink(missing_ok=True)
        if is_disk_full(error):
            raise disk_full_error(error, path.parent, len(text), f"writing {path.name}") from error
        raise


class ModelStore:
    """The models under one LLMKIT_HOME."""

    def __init__(self, home: str | Path | None = None) -> None:
        self.home = Path(home) if home is not None else llmkit_home()
        self.models_root = self.home / "models"
        # Things the user should hear about that are not errors (reclaimed leftovers, a built-in
        # that could not be registered); the CLI prints them.
        self.notices: list[str] = []

    @contextmanager
    def writing(self) -> Iterator[None]:
        """Hold the store's write lock (reentrant); every write to the store happens inside it.

        The first holder cleans what killed writers left behind and records how much it reclaimed.
        Callers re-check names under it: another process may have written since they looked.
        """
        with store_lock(self.models_root) as reclaimed:
            if reclaimed and reclaimed.entries:
                noun = "folder or file" if reclaimed.entries == 1 else "folders and files"
                self.notices.append(
                    f"Reclaimed {human_bytes(reclaimed.bytes)} from {reclaimed.entries} "
                    f"leftover staging {noun} of interrupted llmkit processes."
                )
            yield

    def staging(self, label: str) -> Path:
        """A hidden work folder under models/ that the next writer removes if this process dies."""
        return staging_directory(self.models_root, label)

    # ---- reading -------------------------------------------------------------------------
    def names(self) -> list[str]:
        if not self.models_root.exists():
            return []
        return sorted(
            self._read_manifest(folder / MANIFEST_FILE).name
            for folder in self.models_root.iterdir()
            # Hidden folders are staging areas: work in progress, not models (yet).
            if not folder.name.startswith(".") and (folder / MANIFEST_FILE).exists()
        )

    def list(self) -> list[ModelManifest]:
        """Every model in the store, registering built-ins whose package is installed."""
        for builtin in BUILTIN_MODELS.values():
            if not self._manifest_path(builtin.name).exists() and builtin.locate() is not None:
                try:
                    self.ensure_builtin(builtin.name)
                except LlmkitError as error:
                    # Listing still works when a built-in cannot be registered (e.g. a full disk).
                    self.notices.append(f"{builtin.name} is not available yet: {error}")
        return [self.get(name) for name in self.names()]

    def has(self, name: str) -> bool:
        """Whether NAME has a manifest in the store (a built-in is registered at first use)."""
        return self._manifest_path(validate_model_name(name)).exists()

    def get(self, name: str) -> ModelManifest:
        """The manifest of a model; built-ins are registered on first use."""
        validate_model_name(name)
        manifest_path = self._manifest_path(name)
        if manifest_path.exists():
            return self._read_manifest(manifest_path)
        base, _, tag = name.rpartition(":")
        if base and tag in TAGS:  # NAME:latest is NAME (as in Ollama); NAME:original, untuned
            manifest = self.get(base)
            return manifest.original() if tag == "original" else manifest
        if name in BUILTIN_MODELS:
            return self.ensure_builtin(name)
        raise ModelNotFoundError(self._unknown_model_message(name))

    def resolve(self, name_or_path: str) -> ModelManifest:
        """A store name, or a path to a GGUF file / HF folder used in place (nothing is copied)."""
        candidate = Path(name_or_path).expanduser()
        looks_like_path = "/" in name_or_path or name_or_path.endswith(".gguf")
        if looks_like_path or (candidate.exists() and not _looks_like_name(name_or_path)):
            if not candidate.exists():
                raise InvalidModelFileError(f"Model file {candidate} does not exist.")
            return self._manifest_for_path(
                candidate.resolve(), name=candidate.stem.lower(), hash_file=False
            )
        return self.get(name_or_path)

    # ---- writing -------------------------------------------------------------------------
    def ensure_builtin(
        self,
        name: str,
        progress: ProgressCallback | None = None,
        parts: Sequence[Path] | None = None,
    ) -> ModelManifest:
        """Register a built-in from its installed package (or from `parts`, its files elsewhere)."""
        builtin = BUILTIN_MODELS[name]
        manifest_path = self._manifest_path(name)
        if manifest_path.exists():
            return self._read_manifest(manifest_path)
        installed = parts is None  # the parts are in site-packages, where pip keeps them
        parts = parts or builtin.locate()
        if parts is None:
            # `pull` installs a split built-in so that its weights are stored once (store/hub.py).
            how = f"llmkit pull {name}" if builtin.part_modules else builtin.install_command
            raise ModelNotFoundError(
                f"The built-in model '{name}' is not installed; install it with: {how}"
            )
        folder = model_directory(self.models_root, name)
        with self.writing():
            if manifest_path.exists():  # another process registered it while we waited
                return self._read_manifest(manifest_path)
            staging = self.staging(folder.name)
            try:
                if builtin.part_modules:
                    weights = self._assemble_parts(builtin, parts, staging)
                else:
                    weights = parts[0]
                    digest = sha256_of(weights, progress)
                    self._check_sha256(weights, digest, builtin.sha256)
                manifest = self._manifest_for_path(weights, name=name, known_sha256=builtin.sha256)
                manifest.source = f"builtin:{builtin.package}"
                manifest.linked = not builtin.part_modules
                if builtin.part_modules:
                    manifest.path = str(folder / weights.name)
                self._commit(staging, folder, manifest)
                if builtin.part_modules and installed:
                    # Parts cannot be loaded in place, so the joined file is a second copy.
                    self.notices.append(
                        f"{name} is now in the store; the "
                        f"{human_bytes(sum(part.stat().st_size for part in parts))} of its parts "
                        f"in site-packages are not needed any more: "
                        f"pip uninstall {' '.join(builtin.packages)}"
                    )
                return manifest
            finally:
                shutil.rmtree(staging, ignore_errors=True)

    def import_model(
        self,
        source: str | Path,
        name: str,
        *,
        link: bool = False,
        move: bool = False,
        force: bool = False,
        progress: ProgressCallback | None = None,
        provenance: str | None = None,
        allow_pickle: bool = False,
        sha256: str | None = None,
        settings: dict[str, Any] | None = None,
    ) -> ModelManifest:
        """Copy (or link, or move) a GGUF file or HF folder into the store under a validated name.

        `sha256`, when the caller knows it (a file another tool stores under its digest), is
        recorded instead of hashing the file again; `settings` are manifest fields to set (an
        imported model's system prompt, defaults, ...), written in the same commit.
        The copy is made in a staging folder outside the lock; the name is checked again under
        the lock just before the staging folder is renamed into place, so of two imports of one
        name without `force`, exactly one wins.
        """
        validate_model_name(name)
        source = Path(source).expanduser().resolve()
        if not source.exists():
            raise InvalidModelFileError(f"{source} does not exist.")
        weights_kind = "gguf"
        if source.is_file():
            read_gguf_header(source)  # refuse broken files before anything is written
        elif not (source / "config.json").exists():
            raise InvalidModelFileError(
                f"{source} is neither a GGUF file nor a Hugging Face model folder (no config.json)."
            )
        else:
            weights_kind = check_hf_weights(source, allow_pickle=allow_pickle)
        self._refuse_existing(name, force)
        folder = model_directory(self.models_root, name)
        self._ensure_root()
        copying = not link and not (move and _same_filesystem(source, self.models_root))
        needed = _size_of_path(source) if copying else 0
        if copying:
            ensure_free_space(self.models_root, needed, f"importing {source.name}")
        staging = self.staging(folder.name)
        try:
            try:
                weights = self._stage(source, staging, link=link, move=move, progress=progress)
            except OSError as error:
                if is_disk_full(error):
                    shutil.rmtree(staging, ignore_errors=True)
                    raise disk_full_error(
                        error, self.models_root, needed, f"importing {source.name}"
                    ) from error
                raise
            manifest = self._manifest_for_path(weights, name=name, known_sha256=sha256)
            manifest = replace(manifest, **(settings or {}))
            manifest.linked = link
            manifest.source = provenance or f"import:{source}"
            manifest.allow_pickle = weights_kind == "pickle"
            if not link:
                manifest.path = str(folder / weights.name)
            with self.writing():
                self._refuse_existing(name, force)
                self._commit(staging, folder, manifest)
            return manifest
        finally:
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)

    @staticmethod
    def _stage(
        source: Path, staging: Path, *, link: bool, move: bool, progress: ProgressCallback | None
    ) -> Path:
        if link:
            return source
        weights = staging / ("model.gguf" if source.is_file() else "hf")
        if move:
            shutil.move(source, weights)
        elif source.is_file():
            _copy_with_progress(source, weights, progress)
        else:
            shutil.copytree(source, weights)
        return weights

    def _refuse_existing(self, name: str, force: bool) -> None:
        if self._manifest_path(name).exists() and not force:
            raise InvalidParameterError(
                f"A model named '{name}' already exists; pass --force to replace it."
            )

    def _commit(self, staging: Path, folder: Path, manifest: ModelManifest) -> None:
        """With the lock held: the manifest into the staging folder, then one rename into place."""
        _write_json_atomically(staging / MANIFEST_FILE, manifest.to_json())
        (staging / OWNER_FILE).unlink(missing_ok=True)
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(staging, folder)

    def remove(self, name: str) -> ModelManifest:
        with self.writing():
            manifest = self.get(name)
            folder = model_directory(self.models_root, name)
            users = [
                other
                for other in self.names()
                if other != manifest.name and folder in Path(self.get(other).path).parents
            ]
            if users:
                raise InvalidParameterError(
                    f"{', '.join(sorted(users))} use{'s' if len(users) == 1 else ''} the weights "
                    f"of '{name}'; remove {'it' if len(users) == 1 else 'them'} first."
                )
            # Rename first, so a crash midway never leaves a half-deleted model under its name.
            doomed = self.staging(f"rm-{folder.name}")
            os.replace(folder, doomed / folder.name)
            shutil.rmtree(doomed)
        return manifest

    def create_recipe(self, name: str, recipe: Recipe, *, force: bool = False) -> ModelManifest:
        """A model that is `recipe` over its base: the base's weights (not copied), the recipe's
        settings over the base's own."""
        validate_model_name(name)
        base = self.resolve(recipe.base).original()
        if base.name == name:
            raise InvalidParameterError(f"A recipe cannot replace its own base '{name}'.")
        if recipe.adapter and not Path(recipe.adapter).is_file():
            raise InvalidModelFileError(f"The ADAPTER file {recipe.adapter} does not exist.")
        manifest = replace(
            base,
            name=name,
            source=f"recipe:{base.name}",
            linked=True,
            created=time.time(),
            base=base.name,
            template_override=recipe.template or base.template_override,
            system_prompt=recipe.system if recipe.system is not None else base.system_prompt,
            parameters={**base.parameters, **recipe.parameters},
            adapter=recipe.adapter or base.adapter,
            messages=recipe.messages or base.messages,
            license=recipe.license if recipe.license is not None else base.license,
        )
        return self._write_new(manifest, force=force)

    def copy(self, source: str, name: str, *, force: bool = False) -> ModelManifest:
        """Another name for a model: its manifest, the weights shared (as `ollama cp`)."""
        validate_model_name(name)
        original = self.get(source)
        copied = replace(original, name=name, linked=True, created=time.time())
        copied.source = f"copy:{original.name}"
        return self._write_new(copied, force=force)

    def _write_new(self, manifest: ModelManifest, *, force: bool) -> ModelManifest:
        folder = model_directory(self.models_root, manifest.name)
        self._ensure_root()
        with self.writing():
            self._refuse_existing(manifest.name, force)
            if manifest.name in BUILTIN_MODELS:
                raise InvalidParameterError(
                    f"'{manifest.name}' is a built-in model's name; choose another."
                )
            self._commit(self.staging(folder.name), folder, manifest)
        return manifest

    def set_variant(
        self, name: str, weights: Path | None, fmt: str | None, *, reason: str = ""
    ) -> ModelManifest:
        """Make `weights` (moved into the model's folder) the file NAME runs, or with None go back
        to the original; the original file is never touched."""
        folder = model_directory(self.models_root, name)
        with self.writing():
            manifest = self.get(name)
            previous = Path(manifest.variant["path"]) if manifest.variant else None
            manifest.variant = None
            if weights is not None and fmt is not None:
                target = folder / f"variant-{fmt.lower()}.gguf"
                folder.mkdir(parents=True, exist_ok=True)
                shutil.move(str(weights), target)
                manifest.variant = {"path": str(target), "format": fmt, "reason": reason}
            self.save(manifest)
            if previous is not None and previous != manifest.weights_path:
                previous.unlink(missing_ok=True)
        return manifest

    def save(self, manifest: ModelManifest) -> None:
        """Write a manifest (recipe changes: template, system prompt, defaults) under the lock."""
        with self.writing():
            _write_json_atomically(self._manifest_path(manifest.name), manifest.to_json())

    # ---- helpers -------------------------------------------------------------------------
    def _ensure_root(self) -> Path:
        self.models_root.mkdir(parents=True, exist_ok=True)
        return self.models_root

    def _manifest_path(self, name: str) -> Path:
        return model_directory(self.models_root, name) / MANIFEST_FILE

    @staticmethod
    def _read_manifest(path: Path) -> ModelManifest:
        try:
            return ModelManifest.from_json(json.loads(path.read_text()))
        except (json.JSONDecodeError, TypeError) as error:
            raise InvalidModelFileError(
                f"The store entry {path} is corrupt ({error}); remove it with `llmkit rm`."
            ) from error

    def _manifest_for_path(
        self, weights: Path, *, name: str, known_sha256: str | None = None, hash_file: bool = True
    ) -> ModelManifest:
        if weights.is_dir():
            info = describe_hf_directory(weights)
            size = sum(p.stat().st_size for p in weights.rglob("*") if p.is_file())
            digest = _sha256_of_directory(weights) if hash_file else ""
            return ModelManifest(name, str(weights), "hf", digest, size, f"path:{weights}", info)
        info = describe_gguf(read_gguf_header(weights))
        digest = known_sha256 or (sha256_of(weights) if hash_file else "")
        return ModelManifest(
            name, str(weights), "gguf", digest, weights.stat().st_size, f"path:{weights}", info
        )

    def _assemble_parts(self, builtin: BuiltinModel, parts: Sequence[Path], folder: Path) -> Path:
        """Join a built-in's parts into folder (a staging folder), checking space and the hash."""
        target = folder / builtin.filename
        partial = target.with_suffix(".partial")
        needed = sum(part.stat().st_size for part in parts)
        what = f"assembling the built-in model '{builtin.name}'"
        ensure_free_space(folder, needed, what)
        digest = hashlib.sha256()
        try:
            with partial.open("wb") as out:
                for part in parts:
                    with part.open("rb") as handle:
                        while block := handle.read(4 << 20):
                            digest.update(block)
                            out.write(block)
        except OSError as error:
            partial.unlink(missing_ok=True)
            if is_disk_full(error):
                raise disk_full_error(error, folder, needed, what) from error
            raise
        self._check_sha256(partial, digest.hexdigest(), builtin.sha256, remove=True)
        os.replace(partial, target)
        return target

    @staticmethod
    def _check_sha256(path: Path, actual: str, expected: str, remove: bool = False) -> None:
        if actual != expected:
            if remove:
                path.unlink(missing_ok=True)
            raise InvalidModelFileError(
                f"{path} has sha256 {actual[:12]}… but {expected[:12]}… was expected; "
                "the file is damaged, reinstall its package."
            )

    def _unknown_model_message(self, name: str) -> str:
        stored = self.names()
        known = sorted(set(stored) | set(BUILTIN_MODELS))
        close = difflib.get_close_matches(name, known, n=1, cutoff=0.5)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        # A built-in whose package is not installed is not at hand: it needs a pull first.
        ready = sorted(
            set(stored) | {n for n, b in BUILTIN_MODELS.items() if b.locate() is not None}
        )
        to_pull = [n for n in BUILTIN_MODELS if n not in ready]
        pull = (
            f"; to pull first: {', '.join(f'llmkit pull {n}' for n in to_pull)}" if to_pull else ""
        )
        return f"Unknown model '{name}'.{hint} Available: {', '.join(ready) or 'none'}{pull}."


# Tags every model answers to without a manifest of their own.
TAGS = ("latest", "original")


def _looks_like_name(text: str) -> bool:
    try:
        validate_model_name(text)
    except InvalidParameterError:
        return False
    return True


def _size_of_path(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _same_filesystem(source: Path, models_root: Path) -> bool:
    # A move within one filesystem is a rename and needs no space.
    try:
        return source.stat().st_dev == models_root.stat().st_dev
    except OSError:
        return False


def _copy_with_progress(source: Path, target: Path, progress: ProgressCallback | None) -> None:
    total = source.stat().st_size
    done = 0
    with source.open("rb") as reader, target.open("wb") as writer:
        while block := reader.read(8 << 20):
            writer.write(block)
            done += len(block)
            if progress:
                progress(done, total)
