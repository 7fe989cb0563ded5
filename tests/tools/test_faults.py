"""Fault injection over loopback: every recoverable fault is retried away, every other one reported.

The scenarios live in tests/tools/fault_scenarios.py and also produce the figures of docs/reliability.md.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from harvester.testing import FakeArchive, running_server
from tests.tools.fault_scenarios import (
    Scenario,
    clean_run,
    ledger_scenarios,
    run_ledger_scenario,
    run_scenario,
    scenarios,
)

_BASELINES: dict[str, dict[str, dict[str, Any]]] = {}


@pytest.fixture(scope="module")
def served() -> Iterator[tuple[FakeArchive, str]]:
    archive = FakeArchive(executing_polls=0, rate_limit_rps=20.0)
    with running_server(archive) as url:
        yield archive, url


def _names() -> list[str]:
    return [s.name for s in scenarios("http://127.0.0.1:1")]


@pytest.mark.parametrize("name", _names())
async def test_fault(served: tuple[FakeArchive, str], name: str) -> None:
    """The scenario ends as expected: a clean run's records, or the failure reported; nothing partial."""
    archive, url = served
    scenario: Scenario = next(s for s in scenarios(url) if s.name == name)
    if scenario.source not in _BASELINES:
        _BASELINES[scenario.source] = await clean_run(url, scenario.source)
    outcome = await run_scenario(archive, url, scenario, _BASELINES[scenario.source])
    assert outcome.injected > 0, "the fault was never hit"
    assert outcome.partial_files == 0
    assert outcome.violations == 0
    assert outcome.extra == 0
    if scenario.expect == "recover":
        assert outcome.lost == 0 and outcome.reported == [], outcome.reported
    else:
        assert outcome.reported, "an unrecoverable fault must be reported"
        assert all(scenario.cause in r for r in outcome.reported), outcome.reported


def _ledger_names() -> list[str]:
    return [s.name for s in ledger_scenarios()]


@pytest.mark.parametrize("name", _ledger_names())
async def test_ledger_fault(served: tuple[FakeArchive, str], name: str, tmp_path: Path) -> None:
    """Damage to an output between runs: the rerun ends with a clean run's output, and says so."""
    _, url = served
    scenario = next(s for s in ledger_scenarios() if s.name == name)
    outcome = await run_ledger_scenario(url, tmp_path, scenario)
    assert outcome.identical, outcome
    assert not outcome.silent, outcome
