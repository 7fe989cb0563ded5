"""`fetched_at` has one ISO 8601 form everywhere: UTC with a +00:00 offset."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import orjson
import pytest
from typer.testing import CliRunner

from harvester.archives.ztf.records import ZtfRecord
from harvester.cli import app
from harvester.io.writers import dumps_record
from harvester.records import Provenance

FORM = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{6})?\+00:00$")
runner = CliRunner()


def _record(fetched_at: object) -> ZtfRecord:
    return ZtfRecord.model_validate(
        {
            "object_id": "1",
            "mjd": 59800.5,
            "filter": "zg",
            "fetched_at": fetched_at,
            "provenance": Provenance(archive="irsa", url="https://irsa.example/x"),
            **dict.fromkeys(
                name
                for name, info in ZtfRecord.model_fields.items()
                if info.is_required()
                and name not in {"object_id", "mjd", "filter", "fetched_at", "provenance"}
            ),
        }
    )


@pytest.mark.parametrize(
    "given",
    [
        datetime(2026, 1, 2, 3, 4, 5, 123456, tzinfo=UTC),
        datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),  # no microseconds: no fraction in either form
        datetime(2026, 1, 2, 5, 4, 5, 123456, tzinfo=timezone(timedelta(hours=2))),
        datetime(2026, 1, 2, 3, 4, 5, 123456),  # naive: the field is UTC
        "2026-01-02T03:04:05.123456Z",
    ],
)
def test_file_form_and_json_dump_agree(given: object) -> None:
    """The bytes written to a record file or jsonl line and a JSON-mode dump (the dry-run summary)
    give the same text, in UTC with +00:00."""
    record = _record(given)
    in_file = orjson.loads(dumps_record(record))["fetched_at"]
    assert (
        in_file
        == record.model_dump(mode="json")["fetched_at"]
        == json.loads(record.model_dump_json())["fetched_at"]
    )
    assert FORM.match(in_file), in_file
    assert record.fetched_at.utcoffset() == timedelta(0)
    assert _record(in_file).fetched_at == record.fetched_at  # it reads back to the same instant


def _fetched(path: Path) -> str:
    value = json.loads(path.read_text())["fetched_at"]
    assert isinstance(value, str)
    return value


def test_record_files_jsonl_dry_run_and_manifest_use_one_form(tmp_path: Path) -> None:
    """Record files, jsonl lines, the dry-run summary's sample_record and the run manifest all print
    UTC times with +00:00 (the dry run used to print Z)."""
    assert runner.invoke(app, ["run", "--source", "ztf", "--offline", "--limit", "2"]).exit_code == 0
    files = sorted((tmp_path / "data/raw/ztf").glob("record_*.json"))
    assert files and all(FORM.match(_fetched(p)) for p in files)
    manifests = list((tmp_path / "data/raw/_manifests").glob("*.json"))
    assert manifests and FORM.match(json.loads(manifests[0].read_text())["started_at"])

    jsonl = ["run", "--source", "mast", "--offline", "--format", "jsonl", "--output", str(tmp_path / "j")]
    assert runner.invoke(app, jsonl).exit_code == 0
    lines = [
        json.loads(x) for p in (tmp_path / "j/mast").glob("part-*.jsonl") for x in p.read_text().splitlines()
    ]
    assert lines and all(FORM.match(line["fetched_at"]) for line in lines)

    dry = runner.invoke(
        app, ["run", "--source", "all", "--offline", "--dry-run", "--limit", "1", "--log-format", "json"]
    )
    assert dry.exit_code == 0, dry.output
    summary = json.loads(dry.stdout)
    for source in ("ztf", "tess", "mast"):
        assert FORM.match(summary["sources"][source]["sample_record"]["fetched_at"]), source
    assert FORM.match(summary["started_at"])
