"""`llmkit embed` on the built-in model: one unit vector per text, as the server's embeddings."""

from __future__ import annotations

import json
import math
from pathlib import Path

from tests.helpers.cli import run_cli

import llmkit


def test_vectors_per_text_from_arguments_a_file_and_stdin(
    builtin_model_path, tmp_path: Path
) -> None:
    lines = run_cli("embed", "smollm2", "a cat", "a dog", input="").stdout.splitlines()
    vectors = [json.loads(line) for line in lines]
    assert len(vectors) == 2 and all(len(v) == 576 for v in vectors)
    assert all(math.isclose(math.fsum(x * x for x in v), 1.0, rel_tol=1e-6) for v in vectors)
    with llmkit.load("smollm2") as model:
        assert model.embed("a cat") == vectors[0]  # the same vector as the Python API
    listing = tmp_path / "texts.txt"
    listing.write_text("a cat\n\na dog\n")
    data = json.loads(run_cli("embed", "smollm2", "-i", str(listing), "--json", input="").stdout)
    assert data["embeddings"] == vectors and data["dimensions"] == 576 and len(data["tokens"]) == 2
    piped = run_cli("embed", "smollm2", input="a cat")
    assert json.loads(piped.stdout) == vectors[0]


def test_nothing_to_embed_is_one_sentence(builtin_model_path, tmp_path: Path) -> None:
    result = run_cli("embed", "smollm2", input="")
    assert result.returncode != 0 and "Give text to embed" in result.stderr
    missing = run_cli("embed", "smollm2", "-i", str(tmp_path / "none.txt"), input="")
    assert missing.returncode != 0 and "cannot be read" in missing.stderr
