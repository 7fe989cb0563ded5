"""What people see: terminal tables, notebook progress, record tables, logs, generated docs."""

from __future__ import annotations
