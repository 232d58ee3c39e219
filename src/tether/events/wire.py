"""The messages of the cross-process transport: JSON bodies
``{"v": 1, "origin": "<process>", "items": [records.to_wire(item), ...]}``.

A batch is split into messages of at most MESSAGE_BYTES; a consumer refuses anything
larger than MAX_MESSAGE_BYTES, not JSON, or of another version, and leaves out the
items it cannot read. Never pickle: a message is data, whoever could write to the
broker.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable

from tether.events.records import Item, describe, from_wire, to_wire

log = logging.getLogger(__name__)

MESSAGE_BYTES = 256 * 1024  # a batch is sent as messages of at most this size
MAX_MESSAGE_BYTES = 1024 * 1024  # a consumer ignores anything larger
WIRE_VERSION = 1


def encode(origin: str, items: Iterable[Item], limit: int = MESSAGE_BYTES) -> list[bytes]:
    """JSON message bodies ``{"v", "origin", "items": [to_wire(item), ...]}``, each at
    most ``limit`` bytes; an item that cannot fit one on its own is dropped (logged)."""
    head = json.dumps({"v": WIRE_VERSION, "origin": origin})[:-1] + ',"items":['
    room = limit - len(head.encode()) - 2
    bodies: list[bytes] = []
    part: list[bytes] = []
    size = 0
    for item in items:
        try:
            wire = json.dumps(to_wire(item), separators=(",", ":"), allow_nan=False).encode()
        except (TypeError, ValueError) as exc:
            log.warning("event of %s not sent: %s", describe(item), exc)
            continue
        if len(wire) > room:
            log.warning("event of %s not sent: %d bytes", describe(item), len(wire))
            continue
        if part and size + len(wire) + 1 > room:
            bodies.append(_body(head, part))
            part, size = [], 0
        part.append(wire)
        size += len(wire) + 1
    if part:
        bodies.append(_body(head, part))
    return bodies


def _body(head: str, part: list[bytes]) -> bytes:
    return head.encode() + b",".join(part) + b"]}"


def decode(body: bytes | str) -> tuple[str, list[Item]] | None:
    """The origin and items of a message body; None when it is too large or not ours.
    Malformed items are left out."""
    if len(body) > MAX_MESSAGE_BYTES:
        return None
    try:
        raw = json.loads(body)
    except (ValueError, RecursionError):
        return None
    if not isinstance(raw, dict) or raw.get("v") != WIRE_VERSION:
        return None
    origin, wires = raw.get("origin"), raw.get("items")
    if not isinstance(origin, str) or not isinstance(wires, list):
        return None
    items = [item for w in wires if isinstance(w, dict) and (item := from_wire(w)) is not None]
    return origin, items
