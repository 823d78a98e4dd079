"""Configs: frozen dataclasses, recipe TOML files, and the rule defaults < recipe < flags.

A recipe is plain TOML holding one table per command (`[sft]`, `[eval]`, ...) whose keys are
the command's long flags with `-` written `_`. Flags default to None in the CLI, so a flag the
user did not type never overrides the recipe. Unknown keys and wrong types are refused with
the dotted key and, where one is close, a suggestion.
"""

from __future__ import annotations

import dataclasses
import difflib
import tomllib
import typing
from pathlib import Path

from catcli.errors import UsageError


def load_recipe(path: Path | None) -> dict:
    if path is None:
        return {}
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise UsageError(f"cannot read recipe {path}: {getattr(e, 'strerror', None) or e}") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise UsageError(f"recipe {path} is not valid TOML: {e}") from None


def _check_type(value, hint, key: str):
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        if value is None and type(None) in args:
            return value
        hint = next(a for a in args if a is not type(None))
        origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Literal:
        if value not in args:
            raise UsageError(f"{key} must be one of {', '.join(map(str, args))}, got {value!r}")
        return value
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise UsageError(f"{key} must be a list, got {value!r}")
        return tuple(_check_type(v, args[0], f"{key}[]") for v in value)
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint is Path and isinstance(value, str):
        return Path(value)
    if not isinstance(value, hint) or (hint is int and isinstance(value, bool)):
        raise UsageError(f"{key} must be {hint.__name__}, got {value!r}")
    return value


def resolve(cls, section: str, recipe: dict, flags: dict):
    """Build `cls` from its defaults, then the recipe's [section], then the flags that were given."""
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown_sections = [s for s in recipe if not isinstance(recipe[s], dict)]
    if unknown_sections:
        raise UsageError(f"recipe keys must sit under a table such as [{section}]: found {unknown_sections[0]!r}")
    values: dict = {}
    for key, value in recipe.get(section, {}).items():
        if key not in names:
            close = difflib.get_close_matches(key, names, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise UsageError(f"unknown recipe key {section}.{key}{hint}")
        values[key] = _check_type(value, hints[key], f"{section}.{key}")
    for key, value in flags.items():
        if value is not None:
            values[key] = _check_type(value, hints[key], f"--{key.replace('_', '-')}")
    return cls(**values)


def to_dict(cfg) -> dict:
    out = {}
    for f in dataclasses.fields(cfg):
        v = getattr(cfg, f.name)
        out[f.name] = str(v) if isinstance(v, Path) else list(v) if isinstance(v, tuple) else v
    return out
