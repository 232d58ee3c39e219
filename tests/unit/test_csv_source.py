"""The CSV reader of imports (datasets.files.Source): bounded memory and linear time
on hostile input, the field limit, and records split across reads."""

from __future__ import annotations

import csv
import io
import random
from pathlib import Path

import pytest

from tether.datasets import files
from tether.datasets.errors import DataError
from tether.datasets.files import Source

KIB = 1024


def write(tmp_path: Path, data: bytes) -> Path:
    path = tmp_path / "data.csv"
    path.write_bytes(data)
    return path


def all_records(src: Source) -> list[list[str]]:
    return [record for record, _line in src.records()]


def test_a_line_without_end_fails_on_its_field_after_reading_little(tmp_path: Path) -> None:
    """One 64 MiB line, no newline: the reader fails at the field limit, having read
    a few times the limit, not the whole line."""
    path = tmp_path / "one-line.csv"
    with open(path, "wb") as f:
        for _ in range(64):
            f.write(b"x" * (1 << 20))
    with Source(path, max_field=64 * KIB) as src:
        with pytest.raises(DataError, match=r"^line 1: field larger than 64 KiB"):
            next(src.records())
        assert src._file.tell() <= 2 * files.READ_BYTES + 4 * 64 * KIB
    with Source(path, max_field=64 * KIB) as src:  # the raw-block path too
        with pytest.raises(DataError, match=r"^line 1: field larger than 64 KiB"):
            src.block(4 * KIB)
        assert src._file.tell() <= 2 * files.READ_BYTES + 4 * 64 * KIB


def test_a_record_of_many_small_fields_is_bounded_too(tmp_path: Path) -> None:
    path = write(tmp_path, b"a," * (1 << 20))  # 2 MiB, one line, tiny fields
    with (
        Source(path, max_field=4 * KIB) as src,
        pytest.raises(DataError, match=r"^line 1: record larger than 64 KiB"),
    ):
        next(src.records())
    path = write(tmp_path, b"a\n" + b'"x\n",' * (1 << 18) + b"\n")  # over many lines
    with Source(path, max_field=4 * KIB) as src:
        records = src.records()
        assert next(records) == (["a"], 1)
        with pytest.raises(DataError, match=r"^line 2: record larger than 64 KiB"):
            next(records)


@pytest.mark.parametrize("quoted", [False, True])
def test_fields_up_to_the_limit_pass_and_one_byte_more_fails(tmp_path: Path, quoted: bool) -> None:
    limit = 10 * KIB
    q = b'"' if quoted else b""
    ok = q + b"y" * (limit - 2 * len(q)) + q
    body = b"id,note\n1," + ok + b"\n"
    with Source(write(tmp_path, body), max_field=limit) as src:
        assert all_records(src)[1] == ["1", "y" * (limit - 2 * len(q))]
    over = q + b"z\n" * (limit // 2 + 1) + q if quoted else b"z" * (limit + 1)
    path = write(tmp_path, body + b"2," + over + b"\n3,x\n")
    with (
        Source(path, max_field=limit) as src,
        pytest.raises(DataError, match=r"^line 3: field larger than 10 KiB"),
    ):
        all_records(src)


def test_the_default_limit_is_one_mebibyte() -> None:
    assert files.MAX_FIELD_BYTES == 1 << 20
    assert files.size_text(files.MAX_FIELD_BYTES) == "1 MiB"


def _tricky_csv(rng: random.Random, rows: int) -> bytes:
    cells = ["plain", "", "with,comma", 'quo"te', "multi\nline", "cr\rlf\r\n", "é€😀", "  "]
    out = io.StringIO()
    csv.writer(out, lineterminator="\r\n").writerows(
        [rng.choice(cells) * rng.randint(1, 30) for _ in range(3)] for _ in range(rows)
    )
    return out.getvalue().encode()


@pytest.mark.parametrize("read_bytes", [1, 2, 3, 7, 64])
def test_records_split_across_reads_parse_like_the_csv_module(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, read_bytes: int
) -> None:
    """Quoted fields (delimiters, quotes, CR, LF, multi-byte characters) cut anywhere by
    the reads: records, blocks and offsets are those of the whole file."""
    monkeypatch.setattr(files, "READ_BYTES", read_bytes)
    data = _tricky_csv(random.Random(read_bytes), 300)
    want = list(csv.reader(io.StringIO(data.decode(), newline="")))
    path = write(tmp_path, data)
    with Source(path, max_field=KIB) as src:
        assert all_records(src) == want
        assert src.offset == len(data)
    with Source(path, max_field=KIB) as src:  # blocks of whole records, back to back
        blocks = []
        while block := src.block(100):
            blocks.append(block)
            src.advance(len(block), 0)
    assert b"".join(blocks) == data
    for block in blocks:
        assert list(csv.reader(io.StringIO(block.decode(), newline="")))


def test_time_stays_linear_on_a_long_legal_record(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A record 12 times the field limit: the reader scans it a bounded number of
    times (each check once the line has doubled), and reads each byte once."""
    limit = 16 * KIB
    record = b",".join([b"v" * 1000] * (12 * limit // 1001)) + b"\n"
    scanned: list[int] = []
    real = files.has_long_run

    def spy(data: bytes | bytearray, n: int) -> bool:
        scanned.append(len(data))
        return real(data, n)

    monkeypatch.setattr(files, "has_long_run", spy)
    monkeypatch.setattr(files, "READ_BYTES", KIB)  # many reads: each would copy before
    path = write(tmp_path, b"h\n" + record + b"last\n")
    with Source(path, max_field=limit) as src:
        got = all_records(src)
        assert src._file.tell() == path.stat().st_size
    assert len(got) == 3 and len(got[1]) == 12 * limit // 1001
    assert sum(scanned) <= 4 * len(record)
