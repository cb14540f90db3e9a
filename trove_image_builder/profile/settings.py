"""A small declarative setting machinery (in the spirit of mkosi's
``ConfigSetting``): each field of a frozen settings dataclass declares once

- how its value is parsed (``parse``: value -> typed value, raising
  :class:`FieldError`), and which values are allowed (``choices``);
- its default: a constant (``default``), or a function of other settings
  (``default_factory``) that names the settings it reads
  (``default_factory_depends``, dotted names from the root);
- whether it is required, whether it is a path, and its help text.

:func:`build` turns a merged mapping into the frozen dataclasses with every
default resolved, so nothing in the result means "decide later". A ``null``
value means "not set": the default applies (or, for a required setting, the
error). :func:`describe` lists the settings for ``profiles settings``.

Nothing here knows about Trove: the schema lives in ``schema.py``.
"""
from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass
from pathlib import Path
import re
from typing import Any, Callable

from ..errors import ProfileError


class FieldError(Exception):
    """A parser's complaint about one value. ``key`` names an entry inside
    the value (e.g. one variable of a mapping), when it is about that."""

    def __init__(self, message: str, key: str | None = None):
        super().__init__(message)
        self.message = message
        self.key = key


@dataclass(frozen=True)
class Setting:
    help: str = ""
    parse: Callable[[Any], Any] | None = None
    default: Any = None
    default_factory: Callable[[dict], Any] | None = None
    default_factory_depends: tuple = ()
    required: bool = False
    choices: tuple | Callable[[], tuple] | None = None
    path: bool = False          # relative to the file that sets it; ~ expanded
    section: type | None = None  # a nested settings dataclass ...
    many: bool = False          # ... or a list of them
    optional: bool = False      # the section may be left out (None)

    def allowed(self) -> tuple | None:
        choices = self.choices() if callable(self.choices) else self.choices
        return tuple(choices) if choices is not None else None


def _field(s: Setting, default=dataclasses.MISSING) -> dataclasses.Field:
    meta = {"setting": s, "choices": None if callable(s.choices) else s.allowed()}
    if isinstance(default, (dict, list)):
        return dataclasses.field(default_factory=lambda: copy.deepcopy(default), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def setting(help: str, *, parse=None, default=None, default_factory=None,
            default_factory_depends=(), required=False, choices=None,
            path=False) -> dataclasses.Field:
    """A leaf setting. The dataclass default is the constant default (none
    for a required setting or a dependent default: the loader fills them)."""
    s = Setting(help=help, parse=parse or parse_str, default=default,
                default_factory=default_factory,
                default_factory_depends=tuple(default_factory_depends),
                required=required, choices=tuple(choices) if isinstance(
                    choices, (dict, list, tuple)) else choices, path=path)
    if required or default_factory is not None:
        return _field(s)
    return _field(s, default)


def section(cls: type, *, optional=False, many=False) -> dataclasses.Field:
    """A nested group of settings: ``cls`` (or a list of them, ``many``)."""
    s = Setting(section=cls, optional=optional, many=many)
    if many:
        return _field(s, ())
    if optional:
        return _field(s, None)
    return _field(s)


def settings_of(cls) -> dict[str, Setting]:
    return {f.name: f.metadata["setting"] for f in dataclasses.fields(cls)
            if "setting" in f.metadata}


# --------------------------------------------------------------------------
# Parsers: value (never None) -> typed value, or FieldError

def type_name(value) -> str:
    return {dict: "a mapping", list: "a list", bool: "a boolean",
            type(None): "empty"}.get(type(value), type(value).__name__)


def parse_str(value) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise FieldError(f"must be a string, not {type_name(value)}")
    if isinstance(value, float):
        raise FieldError(f"must be a string; quote it: \"{value}\"")
    return str(value)


_BOOLS = {"true": True, "yes": True, "on": True, "false": False, "no": False, "off": False}


def parse_bool(value) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in _BOOLS:
        return _BOOLS[value.lower()]
    raise FieldError(f"must be true or false, not {value!r}")


def parse_str_list(value) -> tuple:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise FieldError("must be a list of strings")
    return tuple(value)


_ENV_RE = re.compile(r"^[A-Z_][A-Z0-9_]*$")


def parse_env(value) -> dict:
    """NAME: value pairs for an environment; values become strings."""
    if not isinstance(value, dict):
        raise FieldError("must be a mapping of NAME: value")
    out = {}
    for k, v in value.items():
        if not isinstance(k, str) or not _ENV_RE.match(k):
            raise FieldError("not a valid environment variable name", key=str(k))
        if isinstance(v, (dict, list)) or v is None:
            raise FieldError("must be a string", key=k)
        out[k] = str(v).lower() if isinstance(v, bool) else str(v)
    return out


def anchor(value: str, base: Path) -> str:
    """A path made absolute: ~ expanded, a relative one taken in base."""
    return str((base / Path(value).expanduser()).resolve())


# --------------------------------------------------------------------------
# Building: parse what is given, resolve every default, freeze

_UNSET = object()


def build(cls, data, *, leaf: str, provenance: dict | None = None,
          base_of: Callable[[str], Path]):
    """The frozen ``cls`` from ``data`` (a merged mapping).

    provenance: dotted key -> where it was set (names the file in errors;
    missing keys are blamed on ``leaf``); base_of(where): the folder a
    relative path set there is taken in.
    """
    return _Builder(cls, leaf, provenance or {}, base_of).run(data)


class _Builder:
    def __init__(self, cls, leaf, provenance, base_of):
        self.cls, self.leaf, self.provenance, self.base_of = cls, leaf, provenance, base_of
        self.values: dict[str, Any] = {}
        self.index: dict[str, tuple[Setting, str]] = {}   # dotted -> (setting, section)
        self._index(cls, "")
        self.resolving: list[str] = []

    def _index(self, cls, prefix):
        for name, s in settings_of(cls).items():
            if s.section is not None:
                if not s.many:
                    self._index(s.section, f"{prefix}{name}.")
                continue
            self.index[prefix + name] = (s, prefix.rstrip("."))

    def source_of(self, dotted: str) -> str:
        return self.provenance.get(dotted, self.leaf)

    def run(self, data):
        shape = self._read(self.cls, data, "")
        return self._freeze(self.cls, shape, "")

    # 1. Read what is given (the shape of sections, the parsed leaves)
    def _read(self, cls, data, where):
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise ProfileError(self.source_of(where), where,
                               f"must be a mapping, not {type_name(data)}")
        fields = settings_of(cls)
        for key in data:
            if key not in fields:
                dotted = f"{where}.{key}" if where else str(key)
                raise ProfileError(self.source_of(dotted), dotted,
                                   f"unknown key; allowed: {', '.join(fields)}")
        shape = {}
        for name, s in fields.items():
            dotted = f"{where}.{name}" if where else name
            value = data.get(name)
            if s.many:
                shape[name] = self._read_many(s.section, value, dotted)
            elif s.section is not None:
                shape[name] = (None if value is None and s.optional
                               else self._read(s.section, value, dotted))
            elif value is not None:
                self.values[dotted] = self._parse(s, value, dotted)
        return shape

    def _read_many(self, cls, value, dotted):
        if value is None:
            return []
        if not isinstance(value, list):
            keys = ", ".join(f"{k}: ..." for k in settings_of(cls))
            raise ProfileError(self.source_of(dotted), dotted,
                               f"must be a list of {{{keys}}}")
        return [self._read(cls, item, f"{dotted}[{n}]") for n, item in enumerate(value)]

    def _parse(self, s: Setting, value, dotted):
        try:
            parsed = s.parse(value)
        except FieldError as exc:
            at = f"{dotted}.{exc.key}" if exc.key is not None else dotted
            raise ProfileError(self.source_of(at), at, exc.message) from None
        allowed = s.allowed()
        if allowed is not None and parsed not in allowed:
            raise ProfileError(self.source_of(dotted), dotted, f"'{parsed}' is not allowed; "
                               f"choose one of: {', '.join(map(str, allowed))}")
        if s.path and parsed == "":
            return None       # an empty path: none, as when left out
        if s.path:
            return anchor(parsed, self.base_of(self.source_of(dotted)))
        return parsed

    # 2. Every leaf's value: given, or its default (resolving what it depends on)
    def value(self, dotted: str, s: Setting, section: str):
        if dotted in self.values:
            return self.values[dotted]
        if s.required:
            raise ProfileError(self.source_of(section) if section else self.leaf, dotted,
                               "is required")
        if s.default_factory is None:
            value = copy.deepcopy(s.default)
        else:
            if dotted in self.resolving:
                raise AssertionError(f"default cycle: {' -> '.join(self.resolving + [dotted])}")
            self.resolving.append(dotted)
            depends = {}
            for name in s.default_factory_depends:
                dep, dep_section = self.index[name]
                depends[name] = self.value(name, dep, dep_section)
            self.resolving.pop()
            value = s.default_factory(depends)
        self.values[dotted] = value
        return value

    # 3. Freeze into the dataclasses
    def _freeze(self, cls, shape, where):
        kwargs = {}
        for name, s in settings_of(cls).items():
            dotted = f"{where}.{name}" if where else name
            sub = shape.get(name)
            if s.many:
                kwargs[name] = tuple(self._freeze(s.section, item, f"{dotted}[{n}]")
                                     for n, item in enumerate(sub))
            elif s.section is not None:
                kwargs[name] = None if sub is None else self._freeze(s.section, sub, dotted)
            else:
                kwargs[name] = self.value(dotted, s, where)
        return cls(**kwargs)


# --------------------------------------------------------------------------
# Describing

def describe(cls) -> list[tuple[str, str, str]]:
    """(dotted name, allowed values or default, help) for every setting."""
    rows = []

    def walk(cls, prefix):
        for name, s in settings_of(cls).items():
            if s.section is not None:
                walk(s.section, f"{prefix}{name}{'[]' if s.many else ''}.")
                continue
            allowed = s.allowed()
            if allowed is None and s.parse is parse_bool:
                allowed = ("true", "false")
            parts = [" | ".join(map(str, allowed))] if allowed else []
            if s.required:
                parts.append("required")
            elif s.default_factory is not None:
                parts.append("per " + ", ".join(s.default_factory_depends))
            elif not allowed and s.default not in (None, (), {}):
                parts.append(repr(s.default))
            rows.append((prefix + name, ", ".join(parts), s.help))
    walk(cls, "")
    return rows
