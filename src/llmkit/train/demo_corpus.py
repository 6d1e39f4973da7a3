"""A demo corpus every machine has: the docstrings of Python's own standard library.

They are English prose about programs (what a function does, its arguments, an example or two),
about 1.3 MB on Python 3.11, read from the library's source files with `ast` (no module is
imported, so no code runs). The text depends only on the Python version, so two machines with
the same Python get the same corpus; nothing is downloaded.
"""

from __future__ import annotations

import ast
import sys
import sysconfig
from collections.abc import Iterator
from pathlib import Path

from llmkit.train.corpus import DOCUMENT_SEPARATOR

# Packages that are tests, tools or demos rather than the library itself.
SKIPPED = {
    "test",
    "tests",
    "idlelib",
    "tkinter",
    "turtledemo",
    "lib2to3",
    "ensurepip",
    "pydoc_data",
    "site-packages",
    "dist-packages",
}
SHORTEST = 40  # characters: one-line docstrings ("Return self.") teach little but repetition


def corpus_name() -> str:
    return f"python{sys.version_info.major}.{sys.version_info.minor}-docstrings.txt"


def _source_files(root: Path) -> Iterator[Path]:
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root).parts
        if parts[0] in SKIPPED or parts[0].startswith("config-"):
            continue
        if any(part.startswith(("_", "test")) and part != "__init__.py" for part in parts):
            continue
        yield path


def _docstrings(tree: ast.AST) -> Iterator[str]:
    """Docstrings in source order: the module's, then each class and function's as they appear."""
    if isinstance(tree, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
        text = ast.get_docstring(tree)
        if text and len(text) >= SHORTEST:
            yield text
    for child in ast.iter_child_nodes(tree):
        yield from _docstrings(child)


def demo_documents(root: Path | None = None) -> Iterator[str]:
    """One document per standard-library file: its docstrings, separated by blank lines."""
    root = root or Path(sysconfig.get_paths()["stdlib"])
    for path in _source_files(root):
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError, OSError, ValueError):
            continue  # a file this Python cannot read is simply not part of the corpus
        texts = list(_docstrings(tree))
        if texts:
            yield "\n\n".join(texts)


def write_demo_corpus(folder: Path) -> Path:
    """The corpus file in FOLDER, written once (atomically) and reused afterwards."""
    target = folder / corpus_name()
    if target.exists():
        return target
    folder.mkdir(parents=True, exist_ok=True)
    staging = target.with_suffix(".partial")
    separator = f"\n{DOCUMENT_SEPARATOR}\n"
    staging.write_text(separator.join(demo_documents()) + "\n", encoding="utf-8")
    staging.replace(target)
    return target
