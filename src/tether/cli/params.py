"""Task params on the command line: a type's params schema described in a word per
param (``types``), and ``-p key=value`` / ``--params FILE`` turned into JSON (``submit``)."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

from tether.cli.connection import EXIT_USAGE, CliError


def _word(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def param_kind(prop: dict[str, Any]) -> str:
    """A param's JSON schema in a word: its type(s), or its choices ``{a,b}``."""
    if "enum" in prop:
        return "{" + ",".join(map(_word, prop["enum"])) + "}"
    if "const" in prop:
        return "{" + _word(prop["const"]) + "}"
    kind = prop.get("type")
    if kind is None:
        alternatives = prop.get("anyOf") or prop.get("oneOf") or []
        return "|".join(param_kind(p) for p in alternatives if isinstance(p, dict)) or "any"
    return "|".join(kind) if isinstance(kind, list) else str(kind)


def describe_params(schema: dict[str, Any]) -> str:
    required = set(schema.get("required") or [])
    parts = []
    for name, prop in (schema.get("properties") or {}).items():
        text = f"{name}:{param_kind(prop)}"
        if "default" in prop:
            text += f"={json.dumps(prop['default'])}"
        parts.append(text + ("*" if name in required else ""))
    return ", ".join(parts) or "-"


TRUE = {"true", "1", "yes", "y", "on"}
FALSE = {"false", "0", "no", "n", "off"}


def convert(key: str, raw: str, prop: dict[str, Any]) -> Any:
    """``raw`` typed by the JSON schema of the param; CliError (exit 2) if it does not fit."""
    kind = prop.get("type", "string")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "string")
    try:
        if kind == "integer":
            return int(raw)
        if kind == "number":
            value = float(raw)
            if not math.isfinite(value):
                raise ValueError("not a finite number")
            return value
        if kind == "boolean":
            if raw.lower() not in TRUE | FALSE:
                raise ValueError("use true/false, 1/0 or yes/no")
            return raw.lower() in TRUE
        if kind in ("object", "array"):
            value = json.loads(raw)
            if not isinstance(value, dict if kind == "object" else list):
                raise ValueError(f"not a JSON {kind}")
            return value
    except ValueError as exc:
        reason = "not an integer" if kind == "integer" else str(exc)
        if kind == "number" and "could not convert" in reason:
            reason = "not a number"
        raise CliError(
            f"bad value for param {key!r} ({kind} expected): {raw!r}: {reason}", EXIT_USAGE
        ) from None
    return raw


def load_params_file(source: str) -> dict[str, Any]:
    try:
        text = sys.stdin.read() if source == "-" else Path(source).read_text(encoding="utf-8")
    except OSError as exc:
        raise CliError(
            f"cannot read params file {source}: {exc.strerror or exc}", EXIT_USAGE
        ) from None
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise CliError(f"params file {source} is not valid JSON: {exc}", EXIT_USAGE) from None
    if not isinstance(data, dict):
        raise CliError(f"params file {source} must hold a JSON object", EXIT_USAGE)
    return data
