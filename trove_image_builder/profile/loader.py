"""Reading profile files, knowing nothing of Trove: find a profile by name
or path, render it with Jinja2 (sandboxed), parse the YAML, follow the
``extends`` chain, deep-merge it root first and remember which file set
each dotted key (its provenance), and apply ``--set``.

Rendering happens twice per file: a lenient first look, with no variables,
to read its ``extends`` and ``variables``; then, with every variable known
(a child's beat its parents', ``--set`` beats all), a strict one in which an
undefined variable is an error.

Template variables are text. The ``abspath`` filter turns one into an
absolute path taken where the variable was given: in the folder of the file
that declares it under ``variables:``, or in the current folder when it
comes from ``--set`` (a literal, e.g. from ``default('...')``, is taken in
the folder of the file being rendered).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

import jinja2
import jinja2.sandbox
import yaml

from ..errors import InputError, ProfileError
from .settings import anchor

# Where a value given on the command line comes from, in provenance and errors.
SET = "--set"
# Loading-only keys: consumed while reading, not part of the result.
LOADING_KEYS = ("extends", "variables")


# --------------------------------------------------------------------------
# Finding profiles

def available(folder: Path) -> dict[str, Path]:
    """The profiles in folder (those a name finds), by name, in name order
    (prod-x before prod-x-noble, which file-name order reverses)."""
    return {p.stem: p for p in sorted(folder.glob("*.yaml"), key=lambda p: p.stem)}


def display(path: Path) -> str:
    """A file as errors name it: relative to the current folder when inside it."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def locate(ref: str, folder: Path, base: Path | None = None,
           referrer: Path | None = None) -> Path:
    """A profile by name (from folder) or by path (relative to base)."""
    looks_like_path = "/" in ref or ref.endswith((".yaml", ".yml"))
    if looks_like_path:
        path = Path(ref)
        if not path.is_absolute() and base is not None:
            path = base / path
        if path.is_file():
            return path.resolve()
        what = f"no profile file {ref}"
    else:
        path = folder / f"{ref}.yaml"
        if path.is_file():
            return path.resolve()
        names = ", ".join(available(folder))
        what = (f"no profile named '{ref}'; available: {names}" if names
                else f"no profile named '{ref}'")
    if referrer is not None:
        raise ProfileError(display(referrer), "extends", what)
    raise InputError(what + " (see 'trove-image-builder profiles list')")


# --------------------------------------------------------------------------
# Rendering

class _Lenient(jinja2.ChainableUndefined):
    """For the first look at a file (its 'extends' and 'variables'), before
    the variables are known: undefined values take part in arithmetic and
    comparisons instead of failing."""

    def _same(self, *args, **kwargs):
        return self

    def _false(self, *args, **kwargs):
        return False

    __add__ = __radd__ = __sub__ = __rsub__ = __mul__ = __rmul__ = _same
    __truediv__ = __rtruediv__ = __floordiv__ = __rfloordiv__ = _same
    __mod__ = __rmod__ = __pow__ = __rpow__ = __neg__ = __pos__ = _same
    __lt__ = __le__ = __gt__ = __ge__ = _false

    def __int__(self):
        return 0

    def __float__(self):
        return 0.0

    def __hash__(self):
        return 0


class GivenText(str):
    """A variable's value, remembering the folder it was given in."""

    def __new__(cls, text: str, base: Path):
        self = super().__new__(cls, text)
        self.base = base
        return self


def _given(value, base: Path):
    return GivenText(value, base) if isinstance(value, str) else value


def _abspath_filter(here: Path):
    def abspath(value):
        if isinstance(value, jinja2.Undefined):
            return value        # lenient: stays undefined; strict: fails when shown
        return anchor(str(value), getattr(value, "base", here))
    return abspath


def _render(path: Path, text: str, variables: dict, strict: bool) -> str:
    env = jinja2.sandbox.SandboxedEnvironment(
        undefined=jinja2.StrictUndefined if strict else _Lenient,
        keep_trailing_newline=True, autoescape=False)
    env.filters["abspath"] = _abspath_filter(path.parent)
    try:
        return env.from_string(text).render(**variables)
    except jinja2.TemplateSyntaxError as exc:
        raise ProfileError(display(path), None,
                           f"line {exc.lineno}: template error: {exc.message}") from exc
    except jinja2.UndefinedError as exc:
        raise ProfileError(
            display(path), None,
            f"undefined template variable ({exc.message}); "
            "give it with --set NAME=VALUE or under 'variables:'") from exc
    except jinja2.exceptions.SecurityError as exc:
        raise ProfileError(display(path), None, f"template not allowed: {exc}") from exc


def _parse(path: Path, text: str) -> dict:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f"line {mark.line + 1}: " if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ProfileError(display(path), None,
                           f"{line}malformed YAML: {problem}") from exc
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ProfileError(display(path), None,
                           "a profile must be a YAML mapping of settings")
    return data


def _chain(ref: str, folder: Path) -> list[tuple[Path, str, dict]]:
    """The extends chain, root ancestor first: (path, text, lenient parse)."""
    chain = []
    seen: list[Path] = []
    path = locate(ref, folder, base=Path.cwd())
    while True:
        if path in seen:
            names = " -> ".join(p.stem for p in seen + [path])
            raise ProfileError(display(seen[-1]), "extends",
                               f"cycle: {names}; remove one of these 'extends'")
        seen.append(path)
        text = path.read_text()
        peek = _parse(path, _render(path, text, {}, strict=False))
        chain.append((path, text, peek))
        parent = peek.get("extends")
        if parent is None:
            break
        if not isinstance(parent, str) or not parent:
            raise ProfileError(display(path), "extends",
                               "must be a profile name or a path to a YAML file")
        path = locate(parent, folder, base=path.parent, referrer=path)
    return list(reversed(chain))


# --------------------------------------------------------------------------
# Merging, with provenance

def deep_merge(base: dict, over: dict, origin: str, provenance: dict, prefix=""):
    """Merge over into base (in place): mappings merged, lists appended.
    provenance[dotted key] = origin for every key over sets, list entries
    included (``key[n]``, numbered in the merged list)."""
    for key, value in over.items():
        dotted = f"{prefix}{key}"
        provenance[dotted] = origin
        old = base.get(key)
        if isinstance(value, dict) and isinstance(old, dict):
            deep_merge(old, value, origin, provenance, dotted + ".")
        elif isinstance(value, list) and isinstance(old, list):
            _mark(value, origin, provenance, dotted, start=len(old))
            base[key] = old + copy.deepcopy(value)
        else:
            base[key] = copy.deepcopy(value)
            _mark(value, origin, provenance, dotted)
    return base


def _mark(value, origin, provenance, dotted, start=0):
    """Attribute everything inside value (mappings, list entries) to origin."""
    if isinstance(value, dict):
        for key, item in value.items():
            provenance[f"{dotted}.{key}"] = origin
            _mark(item, origin, provenance, f"{dotted}.{key}")
    elif isinstance(value, list):
        for n, item in enumerate(value, start):
            provenance[f"{dotted}[{n}]"] = origin
            _mark(item, origin, provenance, f"{dotted}[{n}]")


def parse_sets(sets, setting_names=()) -> tuple[dict, list]:
    """--set KEY=VALUE: a dotted key or one of setting_names sets that
    setting (VALUE is read as YAML), any other key sets a template variable."""
    variables, fields = {}, []
    for item in sets or ():
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise InputError(f"--set {item}: expected KEY=VALUE")
        if "." in key or key in setting_names:
            try:
                parsed = yaml.safe_load(value) if value != "" else ""
            except yaml.YAMLError:
                parsed = value
            if isinstance(parsed, (bool, int, float)):
                parsed = value      # "10.11" stays a version, not a number
            fields.append((key, parsed))
        else:
            variables[key] = value
    return variables, fields


def _set_dotted(data: dict, dotted: str, value, provenance: dict):
    parts = dotted.split(".")
    node = data
    for n, part in enumerate(parts[:-1]):
        nxt = node.get(part)
        if nxt is None:
            nxt = node[part] = {}
            provenance[".".join(parts[:n + 1])] = SET
        if not isinstance(nxt, dict):
            raise InputError(f"--set {dotted}: '{part}' is not a section")
        node = nxt
    node[parts[-1]] = value
    provenance[dotted] = SET
    _mark(value, SET, provenance, dotted)


# --------------------------------------------------------------------------
# Reading

@dataclass
class Merged:
    data: dict            # the merged mapping, loading keys removed
    provenance: dict      # dotted key -> the file (as displayed) or SET that set it
    files: dict           # displayed name -> absolute path, for each file read
    leaf: Path            # the profile named

    def base_of(self, origin: str) -> Path:
        """The folder a relative path set at origin is taken in."""
        if origin == SET:
            return Path.cwd()
        return self.files.get(origin, self.leaf).parent


def read(ref: str, folder: Path, sets=(), setting_names=()) -> Merged:
    """Render and merge the profile ``ref`` (a path, or a name in folder)
    with ``sets`` (--set KEY=VALUE).

    setting_names: the top-level settings (--set NAME=... sets one; a
    variable may not take one's name).
    """
    set_vars, set_fields = parse_sets(sets, setting_names)
    chain = _chain(ref, folder)
    variables: dict = {}
    for path, _text, peek in chain:
        declared = peek.get("variables") or {}
        if not isinstance(declared, dict):
            raise ProfileError(display(path), "variables", "must be a mapping of NAME: value")
        for key, value in declared.items():
            if key in setting_names:
                raise ProfileError(display(path), f"variables.{key}",
                                   "shadows a profile setting; rename the variable")
            variables[key] = _given(value, path.parent)
    variables.update({k: _given(v, Path.cwd()) for k, v in set_vars.items()})

    merged: dict = {}
    provenance: dict = {}
    files: dict = {}
    for path, text, _peek in chain:
        data = _parse(path, _render(path, text, variables, strict=True))
        for key in LOADING_KEYS:
            data.pop(key, None)
        files[display(path)] = path
        deep_merge(merged, data, display(path), provenance)
    for dotted, value in set_fields:
        _set_dotted(merged, dotted, value, provenance)
    return Merged(merged, provenance, files, chain[-1][0])
