"""Serializer fields that take JSON types as they are: DRF's CharField turns ``5`` into
``"5"`` and FloatField turns ``true`` into ``1.0`` and ``"300"`` into ``300.0``."""

from __future__ import annotations

from typing import Any

from rest_framework import serializers

JSON_TYPES = {bool: "a boolean", int: "a number", float: "a number", list: "an array"}


def json_type(value: Any) -> str:
    if isinstance(value, dict):
        return "an object"
    return JSON_TYPES.get(type(value), "a string" if isinstance(value, str) else "null")


class StrictCharField(serializers.CharField):
    """A JSON string, never a number, boolean, array or object."""

    def to_internal_value(self, data: Any) -> str:
        if not isinstance(data, str):
            raise serializers.ValidationError(f"must be a string, not {json_type(data)}")
        return str(super().to_internal_value(data))


class StrictRegexField(serializers.RegexField):
    def to_internal_value(self, data: Any) -> str:
        if not isinstance(data, str):
            raise serializers.ValidationError(f"must be a string, not {json_type(data)}")
        return str(super().to_internal_value(data))


class StrictFloatField(serializers.FloatField):
    """A JSON number, never a boolean or a string."""

    def to_internal_value(self, data: Any) -> float:
        if isinstance(data, bool) or not isinstance(data, int | float):
            raise serializers.ValidationError(f"must be a number, not {json_type(data)}")
        return float(super().to_internal_value(data))
