"""The Source contract's shared pieces: the report notes a source keeps."""

from __future__ import annotations

from harvester.archives.base import SourceNotes


def test_a_tally_is_one_warning_line_per_kind_with_its_count_kept_current() -> None:
    notes = SourceNotes(warnings=["an earlier warning"])
    for _ in range(3):
        notes.tally("a", lambda n: f"{n} of kind a")
    notes.tally("b", lambda n: f"{n} of kind b")
    assert notes.warnings == ["an earlier warning", "3 of kind a", "1 of kind b"]
    assert notes.counts == {"a": 3, "b": 1}
