"""The CSV reader of imports (datasets.files.Source): bounded memory and linear time
on hostile input, the field limit, and records split across reads."""

from __future__ import annotations

import csv
import io
import random
from pathlib import Path

import pytest

from tether.datasets import files
from tether.datasets.errors import DataError, TooManyColumns
from tether.datasets.fields import FieldCounter
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
        Source(path, max_field=4 * KIB, max_cols=1 << 21) as src,
        pytest.raises(DataError, match=r"^line 1: record larger than 64 KiB"),
    ):
        next(src.records())
    path = write(tmp_path, b"a\n" + b'"x\n",' * (1 << 18) + b"\n")  # over many lines
    with Source(path, max_field=4 * KIB, max_cols=1 << 21) as src:
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


# -- the column limit (TETHER_CSV_MAX_COLUMNS) ---------------------------------------------


def test_a_line_of_millions_of_fields_is_refused_after_reading_its_start(
    tmp_path: Path,
) -> None:
    """5,000,000 fields on one 15 MB line (under the record limit): refused on the
    first MiB read, before the csv module makes a field of it."""
    path = write(tmp_path, b"ab," * 5_000_000)
    with Source(path, max_field=1 << 20, max_cols=1000) as src:
        with pytest.raises(
            TooManyColumns,
            match=r"^line 1: [\d,]+ fields or more; an import "
            r"takes at most 1,000 columns \(TETHER_CSV_MAX_COLUMNS\)",
        ):
            next(src.records())
        assert src._file.tell() <= 2 * files.READ_BYTES
    with Source(path, max_field=1 << 20, max_cols=1000) as src:  # the raw block path
        with pytest.raises(TooManyColumns, match=r"^line 1: "):
            src.block(64 * KIB)
        assert src._file.tell() <= 2 * files.READ_BYTES


def test_the_column_limit_counts_fields_not_delimiters(tmp_path: Path) -> None:
    """Up to the limit passes; one field more fails naming its line, wherever the
    record is; delimiters inside quotes (over many lines, too) separate nothing."""
    wide = ",".join(f'"x,{i}\n,"' for i in range(10)).encode()  # 10 fields, 30 commas
    body = b"a,b\n1,2\n" + wide + b"\n" + b",".join([b"v"] * 10) + b"\n"
    with Source(write(tmp_path, body), max_cols=10) as src:
        assert [len(r) for r in all_records(src)] == [2, 2, 10, 10]
    with Source(write(tmp_path, body + b"," * 10 + b"\n"), max_cols=10) as src:
        records = src.records()
        assert [len(next(records)[0]) for _ in range(4)] == [2, 2, 10, 10]
        with pytest.raises(TooManyColumns, match=r"^line 15: 11 fields or more; .* 10 columns"):
            next(records)


def test_the_field_counter_agrees_with_the_csv_module() -> None:
    """Random records of quotes, doubled quotes, delimiters and line breaks, fed in
    random parts: over the limit exactly when the csv module (strict) makes more
    fields of a record than that."""
    rng = random.Random(10)
    pieces = ["a", ",", '"', '""', "\n", "\r\n", "\r", '"x,y"', ',"', '",', ";"]
    checked = 0
    for _ in range(5000):
        text = "".join(rng.choice(pieces) for _ in range(rng.randint(1, 40)))
        try:
            records = list(csv.reader(io.StringIO(text, newline=""), strict=True))
        except csv.Error:
            continue  # (the reader fails on those anyway)
        most = max((len(r) for r in records), default=0)
        for limit in (most - 1, most):
            if limit < 1:
                continue
            counter, over, data, i = FieldCounter(b",", limit), False, text.encode(), 0
            while i < len(data) and not over:
                step = rng.randint(1, 6)
                over = counter.feed(data[i : i + step])
                i += step
            assert over == (most > limit), (text, records, limit)
            checked += 1
    assert checked > 1000
