"""Generated references match the models, and the public API is exactly what is meant to be public."""

from __future__ import annotations

from pathlib import Path

import harvester
from harvester import archives
from harvester.display.schema import configuration_document, schema_document

REPO = Path(__file__).resolve().parents[2]


def test_configuration_reference_is_current() -> None:
    """docs/configuration.md is what `harvester docs` generates from the settings model today."""
    assert (REPO / "docs" / "configuration.md").read_text() == configuration_document()


def test_schema_reference_is_current() -> None:
    """docs/schema.md is what `harvester docs` generates from the record models today."""
    assert (REPO / "docs" / "schema.md").read_text() == schema_document()


def test_public_api_is_pinned() -> None:
    """harvester.__all__ lists exactly the intended public names, each importable."""
    assert sorted(harvester.__all__) == sorted(
        [
            "ArchiveResponseError",
            "BaseRecord",
            "ConfigError",
            "HarvesterError",
            "MastRecord",
            "OutputError",
            "Provenance",
            "RunReport",
            "Settings",
            "SizeLimitError",
            "SourceReport",
            "TargetFailure",
            "TerminalError",
            "TessRecord",
            "TransientError",
            "ZtfRecord",
            "__version__",
            "harvest",
            "harvest_sync",
            "load_settings",
            "progress",
            "read_records",
            "stream",
            "stream_sync",
            "tess_arrays",
            "to_dataframe",
            "to_lightcurve",
            "to_table",
        ]
    )
    for name in harvester.__all__:
        assert getattr(harvester, name) is not None


def test_every_record_field_has_a_description() -> None:
    """Each documented field of every registered archive's records has a meaning."""
    assert archives.names() == ("ztf", "tess", "mast")
    for source in archives.names():
        for name, field in archives.record_model(source).model_fields.items():
            assert field.description, f"{source}.{name} has no description"
