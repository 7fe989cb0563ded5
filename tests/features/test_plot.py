"""Quicklook plots: `harvester plot` writes non-empty PNGs and refuses unknown objects."""

from __future__ import annotations

import math
from pathlib import Path

import orjson
from typer.testing import CliRunner

from harvester.cli import app

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _write(folder: Path, records: list[dict[str, object]]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for n, rec in enumerate(records):
        (folder / f"record_{n:04d}.json").write_bytes(orjson.dumps(rec))


def _ztf(tmp_path: Path) -> None:
    records: list[dict[str, object]] = []
    for band, base in (("zg", 15.0), ("zr", 14.6)):
        for i in range(30):
            records.append(
                {
                    "source": "ztf",
                    "object_id": "675103300002930",
                    "filter": band,
                    "mjd": 59800.0 + i * 1.7,
                    "mag": None if i == 7 else base + 0.3 * math.sin(i / 3),
                    "magerr": 0.03,
                    "catflags": 32768 if i % 11 == 0 else 0,
                }
            )
    _write(tmp_path / "data" / "raw" / "ztf", records)


def _tess(tmp_path: Path) -> None:
    time = [1325.0 + i / 720 for i in range(5000)]
    flux = [1.0e4 * (1 + 0.01 * math.sin(2 * math.pi * t / 1.3)) for t in time]
    record = {
        "source": "tess",
        "object_id": "261136679",
        "obs_id": "tess2018206074358-s0001-0000000261136679-0120-s",
        "sector": 1,
        "flux_column": "PDCSAP_FLUX",
        "time": time,
        "flux": flux,
    }
    _write(tmp_path / "data" / "raw" / "tess", [record])


def test_plot_ztf_writes_a_png(tmp_path: Path) -> None:
    """`harvester plot ztf --object-id ID` writes a non-empty PNG named after the object."""
    _ztf(tmp_path)
    result = CliRunner().invoke(app, ["plot", "ztf", "--object-id", "675103300002930"])
    assert result.exit_code == 0, result.output
    png = tmp_path / "data" / "processed" / "plots" / "ztf" / "675103300002930.png"
    data = png.read_bytes()
    assert data.startswith(PNG_MAGIC) and len(data) > 10_000


def test_plot_tess_writes_a_png_per_light_curve(tmp_path: Path) -> None:
    """`harvester plot tess --first 1` writes one non-empty PNG per light curve, named by obs_id."""
    _tess(tmp_path)
    result = CliRunner().invoke(app, ["plot", "tess", "--first", "1", "--output", "plots"])
    assert result.exit_code == 0, result.output
    pngs = list((tmp_path / "plots" / "tess").iterdir())
    assert [p.name for p in pngs] == ["tess2018206074358-s0001-0000000261136679-0120-s.png"]
    data = pngs[0].read_bytes()
    assert data.startswith(PNG_MAGIC) and len(data) > 10_000


def test_plot_unknown_object_exits_2(tmp_path: Path) -> None:
    """An object id without records is one line on stderr and exit code 2, and nothing is written."""
    _ztf(tmp_path)
    result = CliRunner().invoke(app, ["plot", "ztf", "--object-id", "42"])
    assert result.exit_code == 2
    assert result.stderr.strip() == "harvester: error: no ztf records of object 42 under data/raw/ztf"
    assert not (tmp_path / "data" / "processed").exists()


def test_plot_needs_an_object_or_first(tmp_path: Path) -> None:
    """Without --object-id or --first the command says what to give, exit code 2."""
    _ztf(tmp_path)
    result = CliRunner().invoke(app, ["plot", "ztf"])
    assert result.exit_code == 2
    assert "--object-id" in result.stderr


def test_readme_plot_example_names_an_object_of_the_offline_sample(tmp_path: Path) -> None:
    """The README's `plot ztf --object-id ID` works after the quick start's offline harvest."""
    import re
    import shutil

    repo = Path(__file__).resolve().parents[2]
    readme = (repo / "README.md").read_text(encoding="utf-8")
    (object_id,) = re.findall(r"harvester plot ztf --object-id (\S+)", readme)
    (tmp_path / "config").mkdir()
    shutil.copy(repo / "config" / "base.yaml", tmp_path / "config" / "base.yaml")
    runner = CliRunner()
    harvested = runner.invoke(app, ["run", "--source", "ztf", "--offline", "--log-format", "json"])
    assert harvested.exit_code == 0, harvested.output
    result = runner.invoke(app, ["plot", "ztf", "--object-id", object_id])
    assert result.exit_code == 0, result.output
    png = tmp_path / "data" / "processed" / "plots" / "ztf" / f"{object_id}.png"
    assert png.read_bytes().startswith(PNG_MAGIC)
