"""Strict decoding of plain YAML data into frozen dataclasses, with every problem listed by path.

`decode(cls, data, path, errors)` never raises on bad data: it appends `path: problem` lines to
`errors` and returns a best-effort value so that one run reports everything at once.
"""
from __future__ import annotations

import dataclasses
import datetime
import types
import typing
from typing import Any, Literal, Union

import yaml

_MISSING = object()


class EnvValue(str):
    """A scalar that was exactly one `${VAR}` reference: its field's type decides how to read it.

    `port: ${PORT}` with PORT=8080 gives the integer 8080, while `api_key: ${KEY}` with KEY=0123
    stays the string "0123" (no YAML re-typing of strings); an empty value is null for an
    optional field.
    """

    def typed(self) -> Any:
        try:
            return yaml.safe_load(str(self)) if self else None
        except yaml.YAMLError:
            return str(self)


def fmt_path(base: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{base}[{key}]"
    part = key if key.replace("_", "").isalnum() else f'"{key}"'
    return f"{base}.{part}" if base else part


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    if origin in (list, tuple):
        return "a list"
    if origin is dict:
        return "a mapping"
    if dataclasses.is_dataclass(tp):
        return "a mapping"
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false"}.get(
        tp, getattr(tp, "__name__", str(tp)))


def decode(tp: Any, value: Any, path: str, errors: list[str]) -> Any:
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if (value is None or value == "" and isinstance(value, EnvValue)) and type(None) in args:
            return None
        candidates = [a for a in args if a is not type(None)]
        for cand in candidates:  # first candidate that decodes cleanly wins
            trial: list[str] = []
            out = decode(cand, value, path, trial)
            if not trial:
                return out
        if len(candidates) == 1:
            return decode(candidates[0], value, path, errors)
        errors.append(f"{path}: expected {' or '.join(_type_name(c) for c in candidates)}")
        return None
    if origin is Literal:
        allowed = typing.get_args(tp)
        if value not in allowed:
            errors.append(f"{path}: must be one of {', '.join(repr(a) for a in allowed)}, "
                          f"got {value!r}")
        return str(value) if isinstance(value, EnvValue) else value
    if origin is list or origin is tuple:
        if not isinstance(value, list):
            errors.append(f"{path}: expected a list, got {type(value).__name__}")
            return ()
        (item_tp, *_) = typing.get_args(tp) or (Any,)
        return tuple(decode(item_tp, v, fmt_path(path, i), errors) for i, v in enumerate(value))
    if origin is dict:
        if not isinstance(value, dict):
            errors.append(f"{path}: expected a mapping, got {type(value).__name__}")
            return {}
        _, val_tp = typing.get_args(tp) or (str, Any)
        return {str(k): decode(val_tp, v, fmt_path(path, str(k)), errors) for k, v in value.items()}
    if dataclasses.is_dataclass(tp):
        return decode_dataclass(tp, value, path, errors)
    return _scalar(tp, value, path, errors)


def _scalar(tp: Any, value: Any, path: str, errors: list[str]) -> Any:
    if isinstance(value, EnvValue):
        if tp is str:
            return str(value)
        typed = value.typed()
        if tp is Any:
            return typed if isinstance(typed, (int, float, bool)) else str(value)
        value = typed if isinstance(typed, (int, float, bool)) else str(value)
    if tp is Any:
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        if isinstance(value, (datetime.date, datetime.datetime)):  # unquoted YAML timestamps
            return value.isoformat()
    else:
        return value
    errors.append(f"{path}: expected {_type_name(tp)}, got {value!r}")
    return None


def decode_dataclass(cls: Any, value: Any, path: str, errors: list[str]) -> Any:
    if value is None:
        value = {}
    if not isinstance(value, dict):
        errors.append(f"{path or 'config'}: expected a mapping, got {type(value).__name__}")
        value = {}
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in value:
        if key not in fields:
            close = [n for n in fields if n.startswith(str(key)[:3])]
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            errors.append(f"{fmt_path(path, str(key))}: unknown key{hint}")
    kwargs: dict[str, Any] = {}
    failed: set[str] = set()
    for name, f in fields.items():
        raw = value.get(name, _MISSING)
        if raw is _MISSING or (raw is None and _has_default(f)):
            if not _has_default(f):
                errors.append(f"{fmt_path(path, name)}: required")
                kwargs[name] = None
            continue
        mine: list[str] = []
        decoded = decode(hints[name], raw, fmt_path(path, name), mine)
        if not f.repr:  # a secret: never echo the value it was given
            mine = [m.split(", got ", 1)[0] for m in mine]
        errors.extend(mine)
        if mine:
            failed.add(name)
        if mine and decoded is None and _has_default(f):
            continue  # keep the default, so that `problems()` below checks sane values
        kwargs[name] = decoded
    try:
        obj = cls(**kwargs)
    except (TypeError, ValueError) as exc:  # pragma: no cover - defensive
        errors.append(f"{path or 'config'}: {exc}")
        return None
    check = getattr(obj, "problems", None)
    if check is not None:
        try:
            problems = check()
        except (TypeError, AttributeError):  # a required field that failed to decode is None
            problems = []
        problems = [p for p in problems if p.split(":", 1)[0] not in failed]  # said already
        errors.extend(f"{path}.{p}" if path else p for p in problems)
    return obj


def _has_default(f: dataclasses.Field[Any]) -> bool:
    return f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING
