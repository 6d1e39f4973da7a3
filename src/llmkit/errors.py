"""Errors a user can cause. The CLI prints their message as one sentence and exits non-zero."""

from __future__ import annotations


class LlmkitError(Exception):
    """A problem the user can fix; the message is shown as is, without a traceback."""

    exit_code = 1


class ModelNotFoundError(LlmkitError):
    """An unknown model name."""


class InvalidModelFileError(LlmkitError):
    """A missing, truncated, corrupt or non-GGUF weights file."""


class InvalidParameterError(LlmkitError):
    """A sampling value, engine name or option outside its allowed range."""

    exit_code = 2


class ContextOverflowError(LlmkitError):
    """A prompt or message that cannot fit in the model's context window."""


class MissingExtraError(LlmkitError):
    """A feature that needs an optional dependency group which is not installed."""

    def __init__(self, feature: str, extra: str, module: str) -> None:
        super().__init__(
            f"{feature} needs the '{extra}' extra (module '{module}' is not installed); "
            f"install it with: pip install 'llmkit[{extra}]'"
        )
        self.extra = extra


def require_module(module: str, *, feature: str, extra: str):
    """Import an optional module, or raise MissingExtraError naming the extra that provides it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise MissingExtraError(feature, extra, module) from error
