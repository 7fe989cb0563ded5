"""Input and output: HTTP, host budgets, files, writers, the ledger, state, object stores."""

from __future__ import annotations
