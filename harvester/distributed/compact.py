"""``harvester compact``: merge committed work units into one Parquet file, deduplicated.

Only units with a manifest (the commit marker) are read, and each data object must match the
sha256 in its manifest. Records are deduplicated across units and runs on the source's dedup key
(cones at cell edges can fetch the same epochs in two units); the first unit in key order wins.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import orjson

from harvester.distributed.objectstore import ObjectStore
from harvester.errors import ConfigError, OutputError
from harvester.records import RECORD_MODELS

__all__ = ["committed_records", "compact"]


def committed_records(source: str, root: str) -> tuple[list[dict[str, Any]], int]:
    """(unique records of every committed unit, duplicates dropped), in a deterministic order."""
    store = ObjectStore(root)
    model = RECORD_MODELS[source]
    seen: set[tuple[str, ...]] = set()
    records: list[dict[str, Any]] = []
    dropped = 0
    manifests = store.list(f"_units/{source}")
    if not manifests:
        raise ConfigError(f"no committed {source} units under {root}: nothing to compact (is --input right?)")
    for key in manifests:
        manifest = orjson.loads(store.get(key) or b"{}")
        body = store.get(manifest["data"])
        if body is None or hashlib.sha256(body).hexdigest() != manifest["sha256"]:
            raise OutputError(f"unit data {manifest['data']} is missing or does not match its manifest")
        for line in body.splitlines():
            if not line:
                continue
            data = orjson.loads(line)
            dedup = model.model_validate(data).dedup_key()
            if dedup in seen:
                dropped += 1
                continue
            seen.add(dedup)
            records.append(data)
    return records, dropped


def _cell(value: Any) -> Any:
    """Nested values (provenance) as JSON text: one flat, typed Parquet column each."""
    return orjson.dumps(value).decode() if isinstance(value, dict | list) else value


def compact(source: str, root: str, output: Path) -> tuple[int, int]:
    """Write ``output`` (Parquet) from the committed units under ``root``; (records, duplicates)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    records, dropped = committed_records(source, root)
    flat = [
        {k: orjson.dumps(v).decode() if isinstance(v, dict | list) else v for k, v in r.items()}
        for r in records
    ]
    table = pa.Table.from_pylist(flat)
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(f".{output.name}.tmp")
    pq.write_table(table, tmp)
    tmp.replace(output)
    return len(records), dropped
