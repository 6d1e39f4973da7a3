"""Where llmkit keeps its files, and the rule that keeps model names inside the store."""

from __future__ import annotations

import os
import re
from pathlib import Path

from llmkit.errors import InvalidParameterError

# Lower-case letters, digits, '.', '_' and '-', optionally one ':tag'. No '/', no '..', so a model
# name can only ever address one folder directly under the store's models/ directory.
_NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}(:[a-z0-9][a-z0-9._-]{0,31})?$")


def llmkit_home() -> Path:
    """The root of llmkit's files: $LLMKIT_HOME, or the user's data directory."""
    configured = os.environ.get("LLMKIT_HOME")
    if configured:
        return Path(configured).expanduser()
    from platformdirs import user_data_dir

    return Path(user_data_dir("llmkit", appauthor=False))


def validate_model_name(name: str) -> str:
    """Return the name if it is a safe store name; raise a clear error otherwise."""
    if not _NAME_PATTERN.match(name) or ".." in name:
        raise InvalidParameterError(
            f"'{name}' is not a valid model name: use lower-case letters, digits, '.', '_' and '-' "
            "(up to 64 characters, optionally ':tag'), with no slashes or '..'."
        )
    return name


def model_directory(models_root: Path, name: str) -> Path:
    """The folder of a model in the store; checked again after resolving, as a second guard."""
    validate_model_name(name)
    folder = (models_root / name.replace(":", "--")).resolve()
    if folder.parent != models_root.resolve():
        raise InvalidParameterError(f"'{name}' would resolve outside the model store.")
    return folder
