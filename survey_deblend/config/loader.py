"""Typed configuration: dataclasses filled from safe YAML, ``--set`` overrides and typed CLI values.

Three layers, later ones winning: the YAML file, ``--set dotted.key=value`` (the value parsed as YAML, like the
file), and the typed options of a command (``--catalog``, ``--out``, ...), which go in as Python values and are
never turned into YAML text, so a path like ``shear #2.fits``, ``2024`` or ``yes`` stays a path. A section
given in part keeps the defaults of the keys it leaves out (for a section whose default differs from its class's
defaults, such as ``deblender``, those of that default). Every problem becomes one ``ConfigError`` line that
names the file and the dotted key, so that the CLI can print it and exit with code 2; no stage re-checks its
configuration.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

import yaml

from survey_deblend.errors import ConfigError

T = TypeVar("T")


def _type_name(tp: Any) -> str:
    origin = get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in get_args(tp))
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in get_args(tp))
    if origin is not None:
        return str(tp).replace("typing.", "")
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Return ``value`` as type ``tp`` or raise a ConfigError naming ``where``."""
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        present = [arg for arg in args if arg is not type(None)]
        if len(present) == 1:  # Optional[X]: X's own message, with its hint
            return _coerce(value, present[0], where)
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where)
            except ConfigError:
                continue
        raise ConfigError(f"{where}: expected {_type_name(tp)}, got {value!r}")
    if origin is Literal:
        if value in get_args(tp):
            return value
        raise ConfigError(f"{where}: expected {_type_name(tp)}, got {value!r}")
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        args = get_args(tp)
        item_tp = args[0] if args else Any
        items = [_coerce(v, item_tp, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        _, val_tp = get_args(tp) or (Any, Any)
        return {str(k): _coerce(v, val_tp, f"{where}.{k}") for k, v in value.items()}
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return from_mapping(tp, value, where)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected true or false, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads 1e9 (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{where}: expected a number, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected an integer, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{where}: expected a string, got {value!r}{_quote_hint(value)}")
    if tp is Path:
        if isinstance(value, (str, Path)):
            return Path(value)
        raise ConfigError(f"{where}: expected a path, got {value!r}{_quote_hint(value)}")
    raise ConfigError(f"{where}: unsupported type {_type_name(tp)}")  # pragma: no cover


def _quote_hint(value: Any) -> str:
    """A YAML scalar that was meant as text (``--set output.out=2024``): say how to keep it text."""
    return f" (YAML read it as {type(value).__name__}; quote the value to keep it text)" if value is not None else ""


def _field_default(f: dataclasses.Field) -> Any:
    """The default value of a dataclass field (its factory called), or MISSING."""
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return dataclasses.MISSING


def from_mapping(cls: type[T], data: dict[str, Any], where: str = "", base: Any = None) -> T:
    """Build dataclass ``cls`` from ``data``; unknown keys and wrong types raise ConfigError.

    Keys that ``data`` leaves out take their values from ``base`` (an instance of ``cls``) when given, else the
    field defaults; a nested section given in part is filled the same way from that field's default instance.
    """
    hints = get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    prefix = f"{where}." if where else ""
    unknown = sorted(set(data) - set(fields))
    if unknown:
        known = ", ".join(sorted(fields))
        raise ConfigError(f"unknown key '{prefix}{unknown[0]}' (known here: {known})")
    kwargs: dict[str, Any] = {}
    for name, f in fields.items():
        default = getattr(base, name) if base is not None else dataclasses.MISSING
        if name not in data:
            if default is not dataclasses.MISSING:
                kwargs[name] = default
            continue
        value = data[name]
        if isinstance(value, dict):  # a section: fill what it leaves out from the field's default instance
            default = _field_default(f) if default is dataclasses.MISSING else default
            if dataclasses.is_dataclass(default) and not isinstance(default, type):
                kwargs[name] = from_mapping(type(default), value, prefix + name, base=default)
                continue
        kwargs[name] = _coerce(value, hints[name], prefix + name)
    missing = [
        n
        for n, f in fields.items()
        if n not in kwargs and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise ConfigError(f"missing key '{prefix}{missing[0]}'")
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:
        message = str(exc)
        if message.split(" ", 1)[0] in fields:  # a field's own check: name it by its dotted key
            raise ConfigError(f"{prefix}{message}") from None
        raise ConfigError(f"{where or cls.__name__}: {message}") from None


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping with the safe loader; errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: configuration file not found")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start}); a configuration is a YAML text file") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" (line {mark.line + 1})" if mark else ""
        raise ConfigError(f"{path}: not valid YAML{line}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return data


def apply_overrides(data: dict[str, Any], overrides: typing.Iterable[str]) -> dict[str, Any]:
    """Apply ``dotted.key=value`` overrides (values parsed as YAML scalars) to a nested mapping."""
    data = _deep_copy(data)
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override '{item}': expected dotted.key=value")
        try:
            value = yaml.safe_load(raw) if raw != "" else None
        except yaml.YAMLError:
            raise ConfigError(f"override '{item}': the value is not valid YAML (quote it to keep it text)") from None
        _set_dotted(data, key, value, f"override '{item}'")
    return data


def apply_values(data: dict[str, Any], values: Mapping[str, Any]) -> dict[str, Any]:
    """Set ``dotted.key -> value`` pairs as they are (typed values of CLI options: never parsed as YAML)."""
    data = _deep_copy(data)
    for key, value in values.items():
        _set_dotted(data, key, value, f"'{key}'")
    return data


def _set_dotted(data: dict[str, Any], key: str, value: Any, label: str) -> None:
    """Set ``data[a][b][c] = value`` for ``key`` ``a.b.c``, creating sections; ``label`` names it in errors."""
    node = data
    parts = key.split(".")
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"{label}: '{part}' is not a section")
        node = child
    node[parts[-1]] = value


def _deep_copy(data: dict[str, Any]) -> dict[str, Any]:
    return {k: _deep_copy(v) if isinstance(v, dict) else v for k, v in data.items()}


def load(
    cls: type[T],
    path: str | Path | None = None,
    overrides: typing.Iterable[str] = (),
    values: Mapping[str, Any] | None = None,
) -> T:
    """Load ``cls`` from a YAML file (or defaults), ``--set`` overrides, then typed ``values``; errors name the
    file and the key. ``values`` maps dotted keys to Python values (a ``Path``, an ``int``, a ``bool``) and wins.
    """
    data = read_yaml(path) if path is not None else {}
    data = apply_overrides(data, overrides)
    data = apply_values(data, values or {})
    try:
        return from_mapping(cls, data)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}" if path is not None else str(exc)) from None
