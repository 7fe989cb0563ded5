"""The one run lifecycle: plan -> fetch -> dedup -> write -> ledger -> report."""

from __future__ import annotations
