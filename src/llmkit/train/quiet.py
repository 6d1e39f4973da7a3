"""Keep the libraries under a fine-tune quiet: their progress bars and warnings, not llmkit's.

transformers draws tqdm bars while it de-quantizes a GGUF file, loads weights and writes shards,
and transformers, peft and torch warn about their own deprecations; none of it is about the user's
run, and in a log file the bars are pages of carriage returns. `--verbose` lets all of it through.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

# Modules whose UserWarnings are about their own internals rather than the user's settings.
NOISY_MODULES = r"(transformers|peft|torch|accelerate|huggingface_hub)(\.|$)"


def _optional(module: str) -> Any:
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        return None


@contextmanager
def quiet_libraries(verbose: bool) -> Iterator[None]:
    """Within the block, silence the libraries' bars, info logs and warnings (unless VERBOSE),
    and put every setting back afterwards."""
    if verbose:
        yield
        return
    with ExitStack() as stack:
        stack.enter_context(warnings.catch_warnings())
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.filterwarnings("ignore", category=UserWarning, module=NOISY_MODULES)
        transformers_logging = _optional("transformers.utils.logging")
        if transformers_logging is not None:
            verbosity = transformers_logging.get_verbosity()
            bars = transformers_logging.is_progress_bar_enabled()
            transformers_logging.set_verbosity_error()
            transformers_logging.disable_progress_bar()

            def restore_transformers() -> None:
                transformers_logging.set_verbosity(verbosity)
                if bars:
                    transformers_logging.enable_progress_bar()

            stack.callback(restore_transformers)
        gguf_loader = _optional("transformers.modeling_gguf_pytorch_utils")
        if gguf_loader is not None and hasattr(gguf_loader, "tqdm"):
            # Its de-quantizing bar calls tqdm directly, past transformers' own switch above.
            original = gguf_loader.tqdm
            gguf_loader.tqdm = functools.partial(original, disable=True)
            stack.callback(setattr, gguf_loader, "tqdm", original)
        hub = _optional("huggingface_hub.utils")
        if hub is not None and not hub.are_progress_bars_disabled():
            hub.disable_progress_bars()
            stack.callback(hub.enable_progress_bars)
        yield
