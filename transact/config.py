"""Configuration files for the stages' dataclass configs: one source of truth for defaults.

A command that takes ``--config FILE`` builds its config as

    the dataclass's defaults  <-  the file (JSON or YAML)  <-  the command-line options given

(:func:`resolve_config`). Options left out on the command line are ``None`` and change nothing,
so defaults live in the dataclass only. Keys are checked: an unknown key, in the file or as an
override path, is a :class:`~transact.errors.UserError` naming the known ones (a typo never
silently adds a setting). Nested dataclasses are nested mappings in a file and dotted paths as
overrides (``model.n_layers``); enum fields take their values' names.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

from transact.errors import UserError

T = TypeVar("T")

__all__ = ["ConfigFileError", "config_from_dict", "config_to_dict", "default_of",
           "load_config_file", "resolve_config", "with_overrides"]


class ConfigFileError(UserError):
    """A configuration file or override is unreadable, unknown or of the wrong type."""


def load_config_file(path: Path | str) -> dict[str, Any]:
    """A JSON (``.json``) or YAML (``.yaml`` / ``.yml``) file holding one mapping."""
    path = Path(path)
    if not path.is_file():
        raise ConfigFileError(f"config file {path} does not exist")
    text = path.read_text()
    suffix = path.suffix.lower()
    try:
        if suffix == ".json":
            data = json.loads(text)
        elif suffix in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text)
        else:
            raise ConfigFileError(f"config file {path}: use a .json, .yaml or .yml file")
    except (json.JSONDecodeError, ValueError) as err:
        raise ConfigFileError(f"config file {path} is not valid {suffix[1:].upper()}: "
                              f"{err}") from err
    except Exception as err:  # yaml.YAMLError without importing yaml at module level
        if type(err).__module__.startswith("yaml"):
            raise ConfigFileError(f"config file {path} is not valid YAML: {err}") from err
        raise
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigFileError(f"config file {path} must hold a mapping of settings, not "
                              f"{type(data).__name__}")
    return data


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _options(hint: Any) -> tuple[Any, ...]:
    """The member types of ``X | None`` / ``Optional[X]`` (or ``(hint,)``)."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return typing.get_args(hint)
    return (hint,)


def _coerce(value: Any, hint: Any, where: str) -> Any:
    options = _options(hint)
    if value is None:
        if type(None) in options:
            return None
        raise ConfigFileError(f"{where} must not be empty (null)")
    errors = []
    for option in options:
        if option is type(None):
            continue
        if dataclasses.is_dataclass(option) and isinstance(option, type):
            if isinstance(value, option):
                return value
            if isinstance(value, Mapping):
                return config_from_dict(option, value, where)
            errors.append(f"a mapping of {option.__name__} settings")
        elif isinstance(option, type) and issubclass(option, enum.Enum):
            if isinstance(value, option):
                return value
            names = [m.value for m in option]
            if value in names:
                return option(value)
            errors.append(f"one of {names}")
        elif typing.get_origin(option) is typing.Literal:
            allowed = typing.get_args(option)
            if value in allowed:
                return value
            errors.append(f"one of {list(allowed)}")
        elif option is bool:
            if isinstance(value, bool):
                return value
            errors.append("true or false")
        elif option is int:
            if isinstance(value, int) and not isinstance(value, bool):
                return value
            errors.append("an integer")
        elif option is float:
            if isinstance(value, int | float) and not isinstance(value, bool):
                return float(value)
            errors.append("a number")
        elif option is str:
            if isinstance(value, str):
                return value
            errors.append("a string")
        else:  # lists, dicts, paths: taken as given
            return value
    raise ConfigFileError(f"{where} must be {' or '.join(errors)}, got {value!r}")


def config_from_dict(cls: type[T], data: Mapping[str, Any], where: str = "") -> T:
    """An instance of dataclass ``cls`` from a mapping: unknown keys are errors, nested
    dataclasses from nested mappings, missing keys keep the defaults."""
    hints = _hints(cls)
    names = [f.name for f in dataclasses.fields(cls) if f.init]  # type: ignore[arg-type]
    unknown = sorted(set(data) - set(names))
    if unknown:
        raise ConfigFileError(f"unknown {where or cls.__name__} keys {unknown}; known: "
                              f"{names}")
    values = {key: _coerce(value, hints[key], f"{where}.{key}" if where else key)
              for key, value in data.items()}
    return cls(**values)


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """A config as plain data (enums as their values), e.g. to write a config file."""
    def plain(value: Any) -> Any:
        if isinstance(value, enum.Enum):
            return value.value
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [plain(v) for v in value]
        return value

    return plain(dataclasses.asdict(cfg))


def with_overrides(cfg: T, overrides: Mapping[str, Any]) -> T:
    """``cfg`` with ``{dotted.path: value}`` replaced (``None`` values are skipped)."""
    for path, value in overrides.items():
        if value is None:
            continue
        cfg = _replace_path(cfg, path.split("."), value, path)
    return cfg


def _replace_path(cfg: Any, parts: list[str], value: Any, path: str) -> Any:
    name = parts[0]
    names = [f.name for f in dataclasses.fields(cfg) if f.init]
    if name not in names:
        raise ConfigFileError(f"unknown setting {path!r} of {type(cfg).__name__}; known: "
                              f"{names}")
    if len(parts) > 1:
        value = _replace_path(getattr(cfg, name), parts[1:], value, path)
    else:
        value = _coerce(value, _hints(type(cfg))[name], path)
    return dataclasses.replace(cfg, **{name: value})


def resolve_config(cls: type[T], config_file: Path | str | None = None,
                   overrides: Mapping[str, Any] | None = None) -> T:
    """The dataclass's defaults, updated by ``config_file`` then by non-``None``
    ``overrides``; validated (``cfg.validate()``) when the class has a ``validate``."""
    data = load_config_file(config_file) if config_file is not None else {}
    cfg = with_overrides(config_from_dict(cls, data), overrides or {})
    validate = getattr(cfg, "validate", None)
    if callable(validate):
        validate()
    return cfg


def default_of(cls: type, name: str) -> Any:
    """A field's default (for help texts that show it without repeating it)."""
    field = next(f for f in dataclasses.fields(cls) if f.name == name)
    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    raise KeyError(f"{cls.__name__}.{name} has no default")
