"""docs/quickstart.ipynb runs top to bottom in a real Jupyter kernel (nbclient, ipykernel).

The kernel is this interpreter (a kernel spec written for the test, first on ``$JUPYTER_PATH``),
whatever ``python`` a system-wide ``python3`` spec would find; its database and checkpoints go to
the test's directory (``$RKSEARCH_STORAGE``, and ``$HOME`` under the default checkpoint path).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from rksearch import results

NOTEBOOK = Path(__file__).parents[1] / "docs" / "quickstart.ipynb"

pytestmark = pytest.mark.timeout(300)


def test_the_quickstart_notebook_runs_top_to_bottom(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = tmp_path / "jupyter" / "kernels" / "rksearch-test"
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "rksearch (test)", "language": "python"}))
    url = f"sqlite:///{tmp_path / 'notebook.db'}"
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    monkeypatch.setenv("RKSEARCH_STORAGE", url)
    monkeypatch.setenv("HOME", str(tmp_path))

    notebook = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(notebook, kernel_name="rksearch-test", timeout=240,
                   resources={"metadata": {"path": str(NOTEBOOK.parent)}}).execute()

    outputs = [output for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    assert any("image/png" in o.get("data", {}) for o in outputs), "no Figure 4"
    assert any("ERKNet" in o.get("text", "") and "|" in o.get("text", "") for o in outputs), "no table"
    trained = results.load(url, study="quickstart-notebook")
    assert len(trained) == 5 and set(trained["epochs"]) == {1}
