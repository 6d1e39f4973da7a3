"""Test files in folders without __init__.py share one module namespace: two files of the same
name would stop the whole run at collection."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]


def test_no_two_test_files_share_a_name_across_plain_folders() -> None:
    plain = [
        path.name
        for folder in TESTS.iterdir()
        if folder.is_dir() and not (folder / "__init__.py").exists()
        for path in folder.glob("test_*.py")
    ]
    assert [name for name, count in Counter(plain).items() if count > 1] == []
