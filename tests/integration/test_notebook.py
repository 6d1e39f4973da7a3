"""examples/getting-started.ipynb runs top to bottom in a real Jupyter kernel, and is kept without outputs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

NOTEBOOK = Path(__file__).resolve().parents[2] / "examples" / "getting-started.ipynb"


def test_notebook_is_stored_without_outputs() -> None:
    cells = json.loads(NOTEBOOK.read_text())["cells"]
    code = [cell for cell in cells if cell["cell_type"] == "code"]
    assert code
    assert all(not cell["outputs"] and cell["execution_count"] is None for cell in code)


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_notebook_runs_top_to_bottom(fresh_home: Path) -> None:
    # fresh_home gives the kernel (which inherits the environment) a scratch store.
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("torch")
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(
        notebook,
        timeout=900,
        kernel_name="python3",
        resources={"metadata": {"path": str(NOTEBOOK.parent)}},
    )
    client.execute()
    outputs = "\n".join(
        output.get("text", "") or str(output.get("data", {}).get("text/plain", ""))
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.outputs
    )
    assert "<|im_start|>user" in outputs  # the exact prompt was shown
    assert "would have stopped" in outputs  # generation went past the end-of-turn token
    assert "Quill" in outputs  # the fine-tune taught the persona
    assert "GiB needed" in outputs  # the plan was made
    assert "Paris" in outputs and "perplexity" in outputs  # next tokens and scores
    assert not any(
        output.get("output_type") == "error"
        for cell in notebook.cells
        for output in cell.get("outputs", [])
    )
