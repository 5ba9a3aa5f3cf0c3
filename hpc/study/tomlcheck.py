"""Typed tables from TOML: unknown keys, wrong types and bad values become one error that
names the file, the line (found by a light scan; tomllib keeps none), the key and the valid
choices. Used by hpc.study.spec for study.toml."""

from __future__ import annotations

import math
import re
import types
from collections.abc import Mapping
from dataclasses import fields
from typing import Any, get_args, get_type_hints


class StudyError(ValueError):
    """A study.toml that cannot run: the message says where, what, and what is valid."""


def table_at(data: dict[str, Any], key: str, where: Where) -> dict[str, Any]:
    value = data.get(key, {})
    if not isinstance(value, dict):
        raise where.error((key,), f"{key} must be a table ([{key}]), got {type(value).__name__}")
    return value


def check_keys(
    table: Mapping[str, Any],
    valid: tuple[str, ...] | list[str],
    path: tuple[str, ...],
    where: Where,
    what: str,
) -> None:
    unknown = [k for k in table if k not in valid]
    if unknown:
        raise where.error(
            path + (unknown[0],),
            f"unknown key {unknown[0]!r} in {what}; valid keys: {', '.join(valid)}",
        )


def fill(
    cls: type,
    values: dict[str, Any],
    path: tuple[str, ...],
    where: Where,
    check_only: Mapping[str, Any] | None = None,
) -> Any:
    """cls(**values) with the types of cls's defaults enforced (a field whose default is None
    is the caller's to check); errors name the key and its line."""
    check_keys(values, tuple(f.name for f in fields(cls)), path, where, f"[{'.'.join(path)}]")
    clean = {}
    for key, value in values.items():
        try:
            clean[key] = check_value(cls, key, value)
        except ValueError as exc:
            raise where.error(path + (key,), str(exc)) from None
    try:
        return cls(**clean)
    except ValueError as exc:
        raise where.error(path + first_key(str(exc), check_only or values), str(exc)) from None


def check_value(cls: type, key: str, value: Any) -> Any:
    """`value` for the field `key` of the dataclass `cls`, in the type of the field's default
    (a whole float for an integer, an int for a float, a list for a tuple); a wrong type, or
    an integer below the class's `MINIMUMS` for the key (0 by default), is a ValueError naming
    the key. A field whose default is None, or whose type is a union, is the caller's to
    check."""
    default = getattr(cls(), key)
    if default is None:
        return value
    if _is_union(cls, key):
        return value  # a field of several types (`str | int`) is its class's to check
    expected = type(default)
    if isinstance(default, tuple):
        item = get_args(get_type_hints(cls)[key])[0]
        if not isinstance(value, (list, tuple)) or not all(_is(v, item) for v in value):
            raise ValueError(f"{key} must be a list of {_KINDS[item][1]}, got {value!r}")
        return tuple(value)
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if expected is int and isinstance(value, float) and value.is_integer() and math.isfinite(value):
        return int(value)  # 1e3 in TOML is a float; a whole number is meant
    if not _is(value, expected):
        raise ValueError(
            f"{key} must be {_KINDS[expected][0]}, got {type(value).__name__} {value!r}"
        )
    low = getattr(cls, "MINIMUMS", {}).get(key, 0)  # a field's own bound, else >= 0
    if expected is int and value < low:
        raise ValueError(f"{key} must be >= {low}, got {value}")
    return value


def _is_union(cls: type, key: str) -> bool:
    return isinstance(get_type_hints(cls)[key], types.UnionType)


def _is(value: Any, expected: type) -> bool:
    return isinstance(value, expected) and not (expected is int and isinstance(value, bool))


# How errors name a type: alone, and in a list.
_KINDS: dict[Any, tuple[str, str]] = {
    int: ("an integer", "integers"),
    float: ("a number", "numbers"),
    str: ("a string", "strings"),
    bool: ("true or false", "true or false values"),
}


def first_key(message: str, table: Mapping[str, Any]) -> tuple[str, ...]:
    """The first key of `table` a message names, to point the error at its line."""
    for key in table:
        if re.search(rf"\b{re.escape(key)}\b", message):
            return (key,)
    return ()


def frozen(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


class Where:
    """Line numbers of tables and keys in a TOML text, found by a light scan (tomllib keeps
    none), so that errors point at the line to fix."""

    _HEADER = re.compile(r"^\s*\[\[?\s*([^\]]+?)\s*\]\]?\s*(#.*)?$")
    _KEY = re.compile(r"^\s*([A-Za-z0-9_\-\.\"' ]+?)\s*=")
    _INLINE = re.compile(r"([A-Za-z0-9_\-]+)\s*=")

    def __init__(self, filename: str, text: str) -> None:
        self.filename = filename
        self.lines: dict[tuple[str, ...], int] = {}
        prefix: tuple[str, ...] = ()
        for number, line in enumerate(text.splitlines(), start=1):
            header = self._HEADER.match(line)
            if header:
                prefix = _split_key(header.group(1))
                self.lines.setdefault(prefix, number)
                continue
            key = self._KEY.match(line)
            if key and not line.lstrip().startswith("#"):
                path = prefix + _split_key(key.group(1))
                self.lines.setdefault(path, number)
                rest = line[key.end() :]
                if rest.strip().startswith("{"):
                    for inner in self._INLINE.findall(rest):
                        self.lines.setdefault(path + (inner,), number)

    def line(self, path: tuple[str, ...]) -> int | None:
        while path:
            if path in self.lines:
                return self.lines[path]
            path = path[:-1]
        return None

    def error(self, path: tuple[str, ...], message: str) -> StudyError:
        line = self.line(path)
        place = f"{self.filename}:{line}" if line else self.filename
        return StudyError(f"{place}: {message}")


def _split_key(key: str) -> tuple[str, ...]:
    return tuple(part.strip().strip("\"'") for part in key.split("."))
