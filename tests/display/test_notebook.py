"""The example notebook runs against the offline archive, and the progress display behaves by place."""

from __future__ import annotations

import io
import os
import sys
from pathlib import Path
from typing import Any

import httpx
import nbformat
import pytest
from nbclient import NotebookClient
from rich.console import Console

import harvester
from harvester.display.notebook import progress
from harvester.testing import FakeArchive

REPO = Path(__file__).resolve().parents[2]
NOTEBOOK = REPO / "docs" / "notebooks" / "quickstart.ipynb"
# nbformat has no type hints
read_notebook: Any = nbformat.read
new_notebook: Any = nbformat.v4.new_notebook
new_code_cell: Any = nbformat.v4.new_code_cell
CONE = {"ztf": {"irsa": {"cone_search": {"ra": 13.0, "dec": 20.0, "radius": 0.01}}}}


def execute(nb: Any, folder: Path) -> Any:
    """Run a notebook on the python3 kernel in ``folder``, with no harvester variables or tokens set."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("HARVESTER_") and k not in ("ZTF_API_TOKEN", "TESS_API_TOKEN", "MAST_API_TOKEN")
    }
    env["IPYTHONDIR"] = str(folder / ".ipython")
    client = NotebookClient(
        nb, kernel_name="python3", timeout=180, resources={"metadata": {"path": str(folder)}}
    )
    client.execute(env=env)
    return nb


@pytest.fixture(scope="module")
def quickstart(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    """The outputs of every code cell of the quick-start notebook, executed once for this module."""
    nb = execute(read_notebook(NOTEBOOK, as_version=4), tmp_path_factory.mktemp("quickstart"))
    return [output for cell in nb.cells if cell.cell_type == "code" for output in cell.outputs]


def texts(outputs: list[dict[str, Any]]) -> str:
    """Every text the outputs show: streams, and the plain-text form of results and displays."""
    parts = [o.get("text", "") for o in outputs]
    parts += [o.get("data", {}).get("text/plain", "") for o in outputs]
    return "\n".join(parts)


def test_kernel_is_this_environments_python(tmp_path: Path) -> None:
    """kernel_name="python3" resolves to the interpreter running the tests (the project's venv)."""
    nb = new_notebook(cells=[new_code_cell("import sys; print(sys.executable)")])
    (cell,) = execute(nb, tmp_path).cells
    assert cell.outputs[0]["text"].strip() == sys.executable


def test_quickstart_harvests_then_plots_a_ztf_and_a_tess_light_curve(
    quickstart: list[dict[str, Any]],
) -> None:
    """The notebook runs end to end offline and draws its two light curves."""
    assert [o for o in quickstart if o["output_type"] == "error"] == []
    assert sum("image/png" in o.get("data", {}) for o in quickstart) == 2
    assert "ok: 200 records written" in texts(quickstart)


def test_quickstart_keeps_the_final_progress_table_in_its_cell(quickstart: list[dict[str, Any]]) -> None:
    """The progress display's last update is the finished run's table, as HTML and as text."""
    tables = [
        o for o in quickstart if "text/html" in o.get("data", {}) and "records" in o["data"]["text/plain"]
    ]
    (table,) = tables
    assert table["data"]["text/plain"].splitlines()[0].startswith("run ")
    assert ": ok (" in table["data"]["text/plain"] and "ztf" in table["data"]["text/plain"]


async def test_progress_draws_the_finished_table_on_a_terminal(tmp_path: Path) -> None:
    """On a terminal the live table ends as the run's summary: source, status and counts."""
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=120)
    with progress(console=console) as report:
        await harvester.harvest(
            "ztf",
            transport=httpx.ASGITransport(app=FakeArchive()),
            output=tmp_path,
            limit=10,
            report=report,
            data_sources=CONE,
        )
    final = out.getvalue()
    assert f"run {report.run_id}: ok" in final and "ztf" in final and " 10 " in final


def test_progress_is_silent_when_not_a_terminal(tmp_path: Path) -> None:
    """Redirected to a file (cron, a log), the display prints nothing: the log events say it all."""
    out = io.StringIO()
    with progress(console=Console(file=out, width=120)) as report:
        harvester.harvest_sync(
            "ztf",
            transport=httpx.ASGITransport(app=FakeArchive()),
            output=tmp_path,
            limit=10,
            report=report,
            data_sources=CONE,
        )
    assert report.sources["ztf"].written == 10 and out.getvalue() == ""
