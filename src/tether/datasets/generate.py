"""Realistic dummy CSV data for trying imports and for benchmarks (`tether gen-csv`).

Nine columns: integers, floats, booleans, dates, timestamps with a zone, and text
with quotes, commas and newlines, as a real export from a shop system would have."""

from __future__ import annotations

import csv
import random
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from typing import IO

HEADER = [
    "id",
    "customer",
    "email",
    "amount",
    "quantity",
    "paid",
    "ordered_at",
    "ship_date",
    "note",
]
FIRST = [
    "Ada",
    "Grace",
    "Alan",
    "Edsger",
    "Barbara",
    "Donald",
    "Frances",
    "Ken",
    "Radia",
    "Tim",
    "Zoë",
    "José",
    "Łukasz",
    "Søren",
]
LAST = [
    "Lovelace",
    "Hopper",
    "Turing",
    "Dijkstra",
    "Liskov",
    "Knuth",
    "Allen",
    "Thompson",
    "Perlman",
    "O'Neil",
    "Müller",
    "García",
]
NOTES = [
    "",
    "",
    "",
    "leave at the door",
    'customer said "urgent"',
    "gift, wrap it",
    "call first,\nthen deliver",
    "=not a formula",
    "fragile; handle with care",
]
EPOCH = datetime(2020, 1, 1, tzinfo=UTC)


def rows(count: int, seed: int = 42) -> Iterator[list[str]]:
    rnd = random.Random(seed)
    for i in range(1, count + 1):
        first, last = rnd.choice(FIRST), rnd.choice(LAST)
        ordered = EPOCH + timedelta(seconds=rnd.randrange(0, 6 * 365 * 86400))
        ship: date = ordered.date() + timedelta(days=rnd.randrange(0, 10))
        yield [
            str(i),
            f"{last}, {first}" if rnd.random() < 0.3 else f"{first} {last}",
            f"{first.lower()}.{last.lower()}{i}@example.com".replace("'", ""),
            f"{rnd.uniform(1, 5000):.2f}",
            str(rnd.randrange(1, 100)),
            "true" if rnd.random() < 0.7 else "false",
            ordered.isoformat().replace("+00:00", "Z"),
            ship.isoformat() if rnd.random() < 0.95 else "",
            rnd.choice(NOTES),
        ]


def write(out: IO[str], count: int, seed: int = 42) -> int:
    """Write a header and ``count`` rows; returns the number of rows written."""
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(HEADER)
    n = 0
    for chunk_start in range(0, count, 10_000):
        batch = list(rows(min(10_000, count - chunk_start), seed + chunk_start))
        for row in batch:
            row[0] = str(chunk_start + int(row[0]))
        writer.writerows(batch)
        n += len(batch)
    return n
