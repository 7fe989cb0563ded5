"""docs/cli.md is the CLI's own --help text, so the reference cannot drift from the commands."""

from __future__ import annotations

from pathlib import Path

import pytest

from harvester.cli import app
from harvester.cli.reference import WIDTH, cli_document, commands

REPO = Path(__file__).resolve().parents[2]
REGENERATE = "regenerate it: uv run python -m harvester.cli.reference > docs/cli.md"


def test_cli_reference_is_current() -> None:
    """docs/cli.md equals the rendering of today's typer app."""
    assert (REPO / "docs" / "cli.md").read_text(encoding="utf-8") == cli_document(), REGENERATE


def test_every_visible_command_has_a_section() -> None:
    """Each command and sub-command the app registers appears, with its options, whatever is added later."""
    document = cli_document()
    paths = [path for path, _, _ in commands(app)]
    assert {"harvester", "harvester run", "harvester archive serve"} <= set(paths)
    for path in paths:
        assert f"## `{path}`" in document and f"$ {path} --help" in document


def test_rendering_does_not_depend_on_the_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    """Help is wrapped at a fixed width, so a narrow and a wide terminal generate the same document."""
    monkeypatch.setenv("COLUMNS", "40")
    narrow = cli_document()
    monkeypatch.setenv("COLUMNS", "250")
    assert cli_document() == narrow
    assert max(len(line) for _, _, text in commands(app) for line in text.splitlines()) <= WIDTH
