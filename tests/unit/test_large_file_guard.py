"""The commit guard refuses model weights and big files, alone and as the pre-commit hook."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
GUARD = ROOT / "scripts" / "check_large_files.py"


def _guard(*files: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(GUARD), *map(str, files)],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_refuses_a_file_over_one_megabyte(tmp_path: Path) -> None:
    big = tmp_path / "data.jsonl"
    big.write_bytes(b"x" * (1024 * 1024 + 1))
    small = tmp_path / "small.jsonl"
    small.write_bytes(b"x" * (1024 * 1024))
    result = _guard(big, small)
    assert result.returncode == 1
    assert f"{big}: 1.0 MB, over the 1 MB limit" in result.stderr
    assert str(small) not in result.stderr


def test_refuses_weights_of_any_size(tmp_path: Path) -> None:
    weights = [tmp_path / name for name in ("tiny.gguf", "model.safetensors", "pytorch_model.bin")]
    for path in weights:
        path.write_bytes(b"\0" * 16)
    result = _guard(*weights)
    assert result.returncode == 1
    assert all(f"{path}: model weights" in result.stderr for path in weights)


def test_passes_ordinary_files(tmp_path: Path) -> None:
    source = tmp_path / "module.py"
    source.write_text("print('hello')\n")
    assert _guard(source).returncode == 0


def test_the_pre_commit_hook_blocks_a_big_file(tmp_path: Path) -> None:
    """The hook as configured in .pre-commit-config.yaml, in a scratch repository."""
    repo = tmp_path / "repo"
    (repo / "scripts").mkdir(parents=True)
    shutil.copy(ROOT / ".pre-commit-config.yaml", repo)
    shutil.copy(GUARD, repo / "scripts")
    (repo / "big.dat").write_bytes(b"x" * (2 * 1024 * 1024))
    env = {**os.environ, "PRE_COMMIT_HOME": str(tmp_path / "cache")}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(args, cwd=repo, env=env, capture_output=True, text=True, timeout=120)

    run("git", "init", "-q")
    run("git", "add", ".")
    result = run(sys.executable, "-m", "pre_commit", "run", "large-files", "--all-files")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "big.dat: 2.0 MB, over the 1 MB limit" in result.stdout
