"""notebooks/*.ipynb run top to bottom under nbclient in smoke mode (RZERO_NOTEBOOK_SMOKE=1): the
smoke configs, no downloads, the report's figures shown."""

import glob
import os
import time

import pytest

from tests.support import REPO

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

NOTEBOOKS = sorted(glob.glob(os.path.join(REPO, "notebooks", "*.ipynb")))


def test_there_is_a_quickstart():
  assert os.path.join(REPO, "notebooks", "quickstart.ipynb") in NOTEBOOKS


@pytest.mark.parametrize("path", NOTEBOOKS, ids=os.path.basename)
@pytest.mark.slow
def test_notebook_runs_in_smoke_mode(path, tmp_path, monkeypatch):
  # The kernel inherits this environment: one CPU device (as the launcher tests), runs in tmp.
  monkeypatch.setenv("RZERO_NOTEBOOK_SMOKE", "1")
  monkeypatch.setenv("RZERO_NOTEBOOK_RUNS", str(tmp_path / "runs"))
  monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=1")
  monkeypatch.setenv("JAX_PLATFORMS", "cpu")
  monkeypatch.setenv("MPLBACKEND", "Agg")
  monkeypatch.delenv("PYTEST_CURRENT_TEST", raising=False)
  nb = nbformat.read(path, as_version=4)
  client = nbclient.NotebookClient(
      nb,
      timeout=900,
      kernel_name="python3",
      resources={"metadata": {"path": os.path.dirname(path)}},
  )
  t0 = time.perf_counter()
  client.execute()  # raises CellExecutionError (with the cell's traceback) if a cell fails
  print(f"{os.path.basename(path)} ran in {time.perf_counter() - t0:.0f} s")
  outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.get("outputs", [])]
  text = "".join(o.get("text", "") for o in outputs if o.get("output_type") == "stream")
  if os.path.basename(path) == "quickstart.ipynb":
    assert "smoke mode: True" in text and "mesh:" in text
    assert "held-out acc" in text  # the table
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) >= 3, "the report's figures are shown"
    assert "download and the real-model run are skipped" in text
