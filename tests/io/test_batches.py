"""A Batch (records as Arrow columns) writes the same bytes as the models it stands for, and
reads back as the same validated models."""

from __future__ import annotations

import random
import struct
from datetime import UTC, datetime, timedelta

import pytest

from harvester.archives.mast.records import MastRecord
from harvester.archives.ztf.records import ZtfRecord
from harvester.io.arrow import arrow_schema, records_table
from harvester.io.batches import Batch
from harvester.io.writers import dumps_record
from harvester.records import BaseRecord, Provenance, key_text

EXTREMES = [
    0.0,
    -0.0,
    1.0,
    15.0,
    1e16,
    1e15,
    1.2345678901234568e17,
    1e-5,
    1e-4,
    1e21,
    1e22,
    5e-324,
    1.7976931348623157e308,
    58202.353159699996,
    2458202.8577286243,
    6.52690369e-6,
    0.1,
    1e7,
]
STRINGS = ['a"b', "é", "\u2028", "\x00", "/", "\\", "\x7f", "😀", "<>&", "tab\there", "new\nline", ""]


def random_float(rng: random.Random) -> float:
    while True:  # any finite double, from its bits
        value: float = struct.unpack("d", struct.pack("Q", rng.getrandbits(64)))[0]
        if value == value and abs(value) != float("inf"):
            return value


def ztf_records(n: int, seed: int) -> list[BaseRecord]:
    rng = random.Random(seed)
    floats = [
        *EXTREMES,
        *(random_float(rng) for _ in range(n)),
        *(round(rng.uniform(-1e3, 1e5), 7) for _ in range(n)),
    ]
    records: list[BaseRecord] = []
    start = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    for i, value in enumerate(floats):
        records.append(
            ZtfRecord(
                object_id=STRINGS[i % len(STRINGS)] + str(i),
                mjd=value,
                filter=("zg", "zr", "zi")[i % 3],
                mag=None if i % 7 == 0 else value,
                magerr=-value,
                ra=None,
                dec=value / 3,
                expid=rng.randrange(-(2**62), 2**62),
                hjd=None,
                catflags=i % 3,
                chi=None,
                sharp=None,
                filefracday=None,
                field=None,
                ccdid=None,
                qid=None,
                limitmag=None,
                magzp=None,
                magzprms=None,
                clrcoeff=None,
                clrcounc=None,
                exptime=None,
                airmass=None,
                programid=None,
                fetched_at=start + timedelta(microseconds=i * 7919) if i % 2 else start,
                provenance=Provenance(
                    archive="irsa", url=f"https://x/?q={STRINGS[i % len(STRINGS)]}", sample=i % 5 == 0
                ),
            )
        )
    return records


def as_batch(records: list[BaseRecord]) -> Batch:
    model = type(records[0])
    return Batch(model, records_table(records, arrow_schema(model)))


@pytest.mark.parametrize("seed", [1, 2])
def test_json_of_a_batch_is_dumps_record_for_any_double_string_and_time(seed: int) -> None:
    """Every finite double (from random bits), the usual extremes, escapes, nulls, large ints,
    times with and without microseconds, and a provenance that changes from row to row."""
    records = ztf_records(2_000, seed)
    batch = as_batch(records)
    assert batch.json_lines() == [dumps_record(r) for r in records]
    assert batch.json_text() == b"".join(dumps_record(r) + b"\n" for r in records)
    # the writers' view of the text behaves as bytes (unsigned), non-ASCII bytes included
    assert (
        batch.json_buffer() == batch.json_text()
        and batch.slice(1, 3).json_buffer() == batch.slice(1, 3).json_text()
    )
    assert max(batch.json_buffer()) > 127


def test_a_batch_reads_back_as_the_same_models() -> None:
    records = ztf_records(200, 3)
    assert as_batch(records).records() == records


def test_keys_take_and_slice_follow_the_rows() -> None:
    records = ztf_records(50, 4)
    batch = as_batch(records)
    assert batch.keys == [r.dedup_key() for r in records]
    picked = batch.take([5, 2, 9])
    assert picked.records() == [records[5], records[2], records[9]]
    assert picked.keys == [records[i].dedup_key() for i in (5, 2, 9)]
    assert batch.slice(3, 6).records() == records[3:6]
    assert batch.column_max("catflags") == 2.0


def test_json_worked_out_once_is_cut_for_slices_and_kept_rows() -> None:
    """The writer's JSON text is encoded once, ahead of the writer; a shard's slice and the rows
    the dedup stage keeps cut that text, line for line what encoding them afresh gives (strings
    with escaped newlines included)."""
    records = ztf_records(300, 6)
    batch = as_batch(records)
    batch.encode_json()
    assert batch.json_ready
    for start, stop in [(0, 0), (0, 1), (3, 17), (17, 17), (100, len(records)), (0, len(records))]:
        part = batch.slice(start, stop)
        assert part.json_ready
        assert part.json_text() == b"".join(dumps_record(r) + b"\n" for r in records[start:stop])
    rows = [0, 2, 3, 7, 11, len(records) - 1]
    kept = batch.take(rows)
    assert kept.json_ready and kept.json_lines() == [dumps_record(records[i]) for i in rows]
    assert kept.slice(1, 4).json_text() == b"".join(dumps_record(records[i]) + b"\n" for i in rows[1:4])
    shuffled = batch.take([5, 2])  # not in order: encoded again when asked
    assert not shuffled.json_ready
    assert shuffled.json_lines() == [dumps_record(records[5]), dumps_record(records[2])]


@pytest.mark.parametrize("seed", [7, 8])
def test_key_texts_joined_by_column_are_the_records_key_texts(seed: int) -> None:
    """Random doubles (each batch of 500 holding an exponent-sized value or not), MJD-like
    values, integral floats and odd strings: the texts built column by column, where they are,
    equal :func:`key_text` of each record's key, and read back as the same keys."""
    rng = random.Random(seed)
    records = ztf_records(3_000, seed)
    for start in range(0, len(records), 500):
        part = records[start : start + 500]
        batch = as_batch(part)
        assert batch.key_texts == [key_text(r.dedup_key()) for r in part]
        assert as_batch(part).keys == [r.dedup_key() for r in part]
    mjds = [round(rng.uniform(58000, 61000), rng.randrange(0, 10)) for _ in range(2_000)]
    plain = [
        r.model_copy(update={"mjd": m, "object_id": str(i)})
        for i, (r, m) in enumerate(zip(records[: len(mjds)], mjds, strict=True))
    ]
    batch = as_batch(plain)
    assert batch.key_texts == [key_text(r.dedup_key()) for r in plain]
    texts = as_batch(plain).key_texts
    assert as_batch(plain).take(list(range(0, 2_000, 3))).key_texts == texts[::3]
    assert batch.slice(10, 20).key_texts == texts[10:20]
    separator = plain[0].model_copy(update={"object_id": "a\x1fb"})  # cannot be split back: per row
    assert as_batch([separator]).key_texts == [key_text(separator.dedup_key())]
    assert as_batch([separator]).keys == [separator.dedup_key()]


def test_another_model_s_batch_writes_its_own_fields() -> None:
    """Nothing in a batch is ZTF's: a MAST record's columns go the same way."""
    fields = dict.fromkeys(MastRecord.model_fields)  # every field null but those given
    record = MastRecord.model_validate(
        {
            **fields,
            "source": "mast",
            "object_id": "TIC 1",
            "obsid": "12345",
            "obs_collection": "TESS",
            "mjd": 58000.5,
            "fetched_at": datetime(2026, 1, 1, tzinfo=UTC),
            "provenance": {"archive": "mast", "url": "https://mast/x", "service": "Mast.Caom.Cone"},
        }
    )
    batch = as_batch([record])
    assert batch.json_lines() == [dumps_record(record)]
    assert batch.records() == [record]


def test_an_empty_batch_writes_nothing() -> None:
    batch = as_batch(ztf_records(1, 5)).slice(0, 0)
    assert batch.json_text() == b"" and batch.json_lines() == [] and batch.keys == []
