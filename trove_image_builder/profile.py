"""Profiles: YAML rendered with Jinja2, merged along ``extends``, validated,
then frozen into one typed :class:`Profile`.

Each setting is declared once, in the dataclasses below: the validation,
``profiles show`` and the build plan all read the same table.
"""
from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
import hashlib
import json
from pathlib import Path
import re

import jinja2
import jinja2.sandbox
import yaml

from . import shipped_dir
from .build.backends import names as backend_names
from .errors import InputError, ProfileError


def setting(default=None, *, kind="str", choices=None, help="", factory=None):
    """Declare one profile setting: its default, type, allowed values, help."""
    meta = {"kind": kind, "choices": tuple(choices) if choices else None, "help": help}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class Distro:
    element: str
    release: str
    mirror_env: str | None


# OS bases. Only Debian and Ubuntu archives are reachable from the CI hosts;
# the others build where their mirrors are (configuration only).
DISTROS = {
    "debian": Distro("debian-minimal", "bookworm", "DIB_DISTRIBUTION_MIRROR"),
    "ubuntu": Distro("ubuntu-minimal", "jammy", "DIB_DISTRIBUTION_MIRROR"),
    "centos": Distro("centos-minimal", "9-stream", "DIB_DISTRIBUTION_MIRROR"),
    "rocky": Distro("rocky-container", "9", None),
}

BACKENDS = backend_names()


@dataclass(frozen=True)
class OsSpec:
    distro: str = setting("debian", choices=DISTROS, help="OS base")
    release: str | None = setting(None, kind="str?", help="release (default per distro)")
    mirror: str | None = setting(None, kind="str?", help="package mirror URL")
    security_mirror: str | None = setting(
        None, kind="str?", help="Debian security mirror URL (debian-security path)")


@dataclass(frozen=True)
class ContainerImage:
    ref: str = setting(None, help="image reference, as Trove will ask for it (e.g. mariadb:10.11)")
    archive: str = setting(None, help="docker-archive tarball or OCI layout (folder or tar)")


@dataclass(frozen=True)
class DatastoreSpec:
    name: str = setting(None, help="datastore element (a folder with datastore.yaml)")
    version: str | None = setting(None, kind="str?", help="datastore version")
    runtime: str = setting("package", choices=("package", "container"),
                           help="how the datastore runs in the guest")
    images: tuple = setting(kind="images", factory=tuple,
                            help="container images preloaded into the image (runtime: container)")


@dataclass(frozen=True)
class GuestAgentSpec:
    install: str = setting("release", choices=("release", "source", "none"),
                           help="where the guest agent comes from")
    version: str | None = setting(None, kind="str?", help="Trove release, for install: release")
    path: str | None = setting(None, kind="str?", help="Trove checkout, for install: source")
    pip_index: str | None = setting(None, kind="str?", help="package index URL for pip")


# How the boot-time certificate hook finds the data volume.
# (written into a shell settings file in the image: no quoting characters)
_VOLUME_RE = re.compile(r"^(/dev/[A-Za-z0-9._/:-]+|LABEL=[A-Za-z0-9._-]+|UUID=[0-9A-Fa-f-]+)$")


@dataclass(frozen=True)
class CertificatesSpec:
    enabled: bool | None = setting(
        None, kind="bool?", help="install the boot-time certificate hook (trove-certs); "
        "default: on for production images with a guest agent")
    volume: str = setting("/dev/vdb", help="data volume holding the certificates' copy: "
                          "a device path, LABEL=name or UUID=uuid")
    user_hook: str | None = setting(
        None, kind="str?", help="your own script, run at boot before the certificates are "
        "checked (path relative to the profile)")


@dataclass(frozen=True)
class ImageSpec:
    format: str = setting("qcow2", choices=("qcow2", "raw", "vhd"), help="disk format")
    size: str = setting("4G", help="disk size in GiB, e.g. 4G")
    compression: str = setting("zstd", choices=("zstd", "zlib", "none"),
                               help="qcow2 compression")


@dataclass(frozen=True)
class Profile:
    name: str = setting(None, help="profile name")
    description: str = setting("", help="one line for 'profiles list'")
    variant: str = setting("production", choices=("production", "development"),
                           help="production images carry no keys or passwords")
    os: OsSpec = setting(kind="section", factory=OsSpec)
    datastore: DatastoreSpec | None = setting(None, kind="section?")
    guest_agent: GuestAgentSpec = setting(kind="section", factory=GuestAgentSpec)
    guest_user: str = setting("trove", help="user the guest agent runs as")
    certificates: CertificatesSpec = setting(kind="section", factory=CertificatesSpec)
    elements: tuple = setting(kind="list", factory=tuple, help="extra element names")
    packages: tuple = setting(kind="list", factory=tuple, help="extra OS packages")
    image: ImageSpec = setting(kind="section", factory=ImageSpec)
    env: dict = setting(kind="dict", factory=dict, help="extra DIB_* variables")
    backend: str = setting("dib", choices=BACKENDS, help="image backend")
    source: str = field(default="", compare=False, metadata={"kind": "internal"})

    def to_dict(self) -> dict:
        data = _plain(dataclasses.asdict(self))
        data.pop("source", None)
        return data

    def digest(self) -> str:
        text = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return "sha256:" + hashlib.sha256(text.encode()).hexdigest()

    @property
    def release(self) -> str:
        return self.os.release or DISTROS[self.os.distro].release

    @property
    def cert_hook(self) -> bool:
        """Whether the image gets the boot-time certificate hook."""
        if self.certificates.enabled is not None:
            return self.certificates.enabled
        return self.variant == "production" and self.guest_agent.install != "none"

    def user_hook_path(self) -> Path | None:
        """The profile's own certificate hook (made absolute when loaded; a
        relative one, from a manifest, is taken beside it)."""
        hook = self.certificates.user_hook
        if not hook:
            return None
        path = Path(hook).expanduser()
        if not path.is_absolute() and self.source:
            path = Path(self.source).parent / path
        return path.resolve()


SECTIONS = {"os": OsSpec, "datastore": DatastoreSpec, "guest_agent": GuestAgentSpec,
            "certificates": CertificatesSpec, "image": ImageSpec}

# Loading-only keys: consumed before validation, not part of the result.
LOADING_KEYS = ("extends", "variables")
TOP_FIELDS = tuple(f.name for f in dataclasses.fields(Profile)
                   if f.metadata.get("kind") != "internal")
_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]*$")
_ENV_RE = re.compile(r"^[A-Z_][A-Z0-9_]*$")
_SIZE_RE = re.compile(r"^[0-9]+(\.[0-9]+)?G?$")


def _plain(value):
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


# --------------------------------------------------------------------------
# Finding profiles

def profiles_dir() -> Path:
    return shipped_dir("profiles")


def available() -> dict[str, Path]:
    return {p.stem: p for p in sorted(profiles_dir().glob("*.yaml"))}


def _display(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def locate(ref: str, base: Path | None = None, referrer: Path | None = None) -> Path:
    """A profile by name (from profiles/) or by path (relative to base)."""
    looks_like_path = "/" in ref or ref.endswith((".yaml", ".yml"))
    if looks_like_path:
        path = Path(ref)
        if not path.is_absolute() and base is not None:
            path = base / path
        if path.is_file():
            return path.resolve()
        what = f"no profile file {ref}"
    else:
        path = profiles_dir() / f"{ref}.yaml"
        if path.is_file():
            return path.resolve()
        what = (f"no profile named '{ref}'; available: {', '.join(available())}"
                if available() else f"no profile named '{ref}'")
    if referrer is not None:
        raise ProfileError(_display(referrer), "extends", what)
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


def _env(undefined) -> jinja2.Environment:
    return jinja2.sandbox.SandboxedEnvironment(
        undefined=undefined, keep_trailing_newline=True, autoescape=False)


def _render(path: Path, text: str, variables: dict, strict: bool) -> str:
    env = _env(jinja2.StrictUndefined if strict else _Lenient)
    try:
        return env.from_string(text).render(**variables)
    except jinja2.TemplateSyntaxError as exc:
        raise ProfileError(_display(path), None,
                           f"line {exc.lineno}: template error: {exc.message}") from exc
    except jinja2.UndefinedError as exc:
        raise ProfileError(
            _display(path), None,
            f"undefined template variable ({exc.message}); "
            "give it with --set NAME=VALUE or under 'variables:'") from exc
    except jinja2.exceptions.SecurityError as exc:
        raise ProfileError(_display(path), None, f"template not allowed: {exc}") from exc


def _parse(path: Path, text: str) -> dict:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f"line {mark.line + 1}: " if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ProfileError(_display(path), None,
                           f"{line}malformed YAML: {problem}") from exc
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ProfileError(_display(path), None,
                           "a profile must be a YAML mapping of settings")
    return data


def _chain(ref: str) -> list[tuple[Path, str, dict]]:
    """The extends chain, root ancestor first: (path, text, lenient parse)."""
    chain = []
    seen: list[Path] = []
    path = locate(ref, base=Path.cwd())
    while True:
        if path in seen:
            names = " -> ".join(p.stem for p in seen + [path])
            raise ProfileError(_display(seen[-1]), "extends",
                               f"cycle: {names}; remove one of these 'extends'")
        seen.append(path)
        text = path.read_text()
        peek = _parse(path, _render(path, text, {}, strict=False))
        chain.append((path, text, peek))
        parent = peek.get("extends")
        if parent is None:
            break
        if not isinstance(parent, str) or not parent:
            raise ProfileError(_display(path), "extends",
                               "must be a profile name or a path to a YAML file")
        path = locate(parent, base=path.parent, referrer=path)
    return list(reversed(chain))


# --------------------------------------------------------------------------
# Merging

def deep_merge(base: dict, over: dict, origin: str, provenance: dict, prefix=""):
    """Merge over into base (in place): mappings merged, lists appended."""
    for key, value in over.items():
        dotted = f"{prefix}{key}"
        provenance[dotted] = origin
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            deep_merge(base[key], value, origin, provenance, dotted + ".")
        elif isinstance(value, list) and isinstance(base.get(key), list):
            base[key] = base[key] + value
        else:
            base[key] = copy.deepcopy(value)
            if isinstance(value, dict):
                _mark(value, origin, provenance, dotted + ".")
    return base


def _mark(data: dict, origin, provenance, prefix):
    for key, value in data.items():
        provenance[f"{prefix}{key}"] = origin
        if isinstance(value, dict):
            _mark(value, origin, provenance, f"{prefix}{key}.")


def parse_sets(sets) -> tuple[dict, list]:
    """--set KEY=VALUE: a dotted or profile key sets that field (VALUE is
    read as YAML), any other key sets a template variable."""
    variables, fields = {}, []
    for item in sets or ():
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise InputError(f"--set {item}: expected KEY=VALUE")
        if "." in key or key in TOP_FIELDS:
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
            provenance[".".join(parts[:n + 1])] = "--set"
        if not isinstance(nxt, dict):
            raise InputError(f"--set {dotted}: '{part}' is not a section")
        node = nxt
    node[parts[-1]] = value
    provenance[dotted] = "--set"


# --------------------------------------------------------------------------
# Validation

_BOOLS = {"true": True, "yes": True, "on": True, "false": False, "no": False, "off": False}


def _check_value(value, f, where, source):
    kind = f.metadata.get("kind", "str")
    choices = f.metadata.get("choices")
    if kind == "bool?":
        if value is None or isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in _BOOLS:
            return _BOOLS[value.lower()]
        raise ProfileError(source, where, f"must be true or false, not {value!r}")
    if kind in ("str", "str?"):
        if value is None and kind == "str?":
            return None
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise ProfileError(source, where, f"must be a string, not {_type(value)}")
        if isinstance(value, float):
            raise ProfileError(source, where,
                               f"must be a string; quote it: \"{value}\"")
        value = str(value)
        if choices and value not in choices:
            raise ProfileError(source, where, f"'{value}' is not allowed; "
                               f"choose one of: {', '.join(choices)}")
        return value
    if kind == "list":
        if value is None:
            return ()
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ProfileError(source, where, "must be a list of strings")
        return tuple(value)
    if kind == "dict":
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise ProfileError(source, where, "must be a mapping of NAME: value")
        out = {}
        for k, v in value.items():
            if not isinstance(k, str) or not _ENV_RE.match(k):
                raise ProfileError(source, f"{where}.{k}",
                                   "not a valid environment variable name")
            if isinstance(v, (dict, list)) or v is None:
                raise ProfileError(source, f"{where}.{k}", "must be a string")
            out[k] = str(v).lower() if isinstance(v, bool) else str(v)
        return out
    raise AssertionError(kind)


def _type(value) -> str:
    return {dict: "a mapping", list: "a list", bool: "a boolean",
            type(None): "empty"}.get(type(value), type(value).__name__)


def _build(cls, data, where: str, provenance: dict, leaf: str):
    def source_of(dotted):
        return provenance.get(dotted, leaf)

    if not isinstance(data, dict):
        raise ProfileError(source_of(where), where,
                           f"must be a mapping, not {_type(data)}")
    fields = {f.name: f for f in dataclasses.fields(cls)
              if f.metadata.get("kind") != "internal"}
    for key in data:
        if key not in fields:
            dotted = f"{where}.{key}" if where else str(key)
            raise ProfileError(source_of(dotted), dotted,
                               f"unknown key; allowed: {', '.join(fields)}")
    values = {}
    for name, f in fields.items():
        dotted = f"{where}.{name}" if where else name
        kind = f.metadata.get("kind")
        if name not in data:
            continue
        value = data[name]
        if kind == "images":
            if value is None:
                values[name] = ()
                continue
            if not isinstance(value, list):
                raise ProfileError(source_of(dotted), dotted,
                                   "must be a list of {ref: ..., archive: ...}")
            values[name] = tuple(_build(ContainerImage, item, f"{dotted}[{n}]", provenance, leaf)
                                 for n, item in enumerate(value))
            continue
        if kind in ("section", "section?"):
            if value is None and kind == "section?":
                values[name] = None
                continue
            sub_cls = SECTIONS[name]
            values[name] = _build(sub_cls, value, dotted, provenance, leaf)
        else:
            values[name] = _check_value(value, f, dotted, source_of(dotted))
    for name, f in fields.items():
        if name not in values and f.default is None and \
                f.metadata.get("kind") == "str":
            dotted = f"{where}.{name}" if where else name
            raise ProfileError(source_of(where) if where else leaf, dotted,
                               "is required")
    return cls(**values)


# The first Trove release (Victoria) whose guest agent runs datastores in
# containers on an engine inside the guest.
FIRST_CONTAINER_AGENT = 14


def _major(version: str | None) -> int:
    try:
        return int(str(version).split(".")[0])
    except ValueError:
        return 0


def _validate(p: Profile, provenance: dict, leaf: str, known_elements) -> None:
    def err(dotted, message):
        raise ProfileError(provenance.get(dotted, leaf), dotted, message)

    if not _NAME_RE.match(p.name):
        err("name", f"'{p.name}' must be lower case letters, digits, '.', '_' or '-'")
    if not _SIZE_RE.match(p.image.size) or float(p.image.size.rstrip("G")) <= 0:
        err("image.size", f"'{p.image.size}' is not a size in GiB; write e.g. 4G")
    ga = p.guest_agent
    if ga.install == "release" and not ga.version:
        err("guest_agent.version", "is required for install: release (e.g. \"26.0.0\")")
    if ga.install == "source" and not ga.path:
        err("guest_agent.path", "is required for install: source (a Trove checkout)")
    if p.variant == "production":
        if ga.install == "source":
            err("guest_agent.install", "'source' is for development images; "
                "a production image takes the agent from a release")
        if "dev-access" in p.elements:
            err("elements", "'dev-access' is for development images only")
    certs = p.certificates
    if not _VOLUME_RE.match(certs.volume):
        err("certificates.volume", f"'{certs.volume}' is not a device path, LABEL=name "
            "or UUID=uuid; write e.g. /dev/vdb")
    if certs.user_hook and not p.cert_hook:
        err("certificates.user_hook", "runs in the certificate hook, which this image "
            "does not get; set certificates.enabled: true")
    if p.datastore is not None and p.datastore.images and p.datastore.runtime != "container":
        err("datastore.images", "preloaded images need runtime: container")
    if p.datastore is not None and p.datastore.runtime == "package" and \
            ga.install == "release" and _major(ga.version) >= FIRST_CONTAINER_AGENT:
        err("datastore.runtime", f"the Trove {ga.version} guest agent runs its datastore "
            "in a container (since Trove 14, Victoria) and cannot manage one from OS "
            "packages; use runtime: container, or guest_agent.install: none")
    if p.datastore is not None and known_elements is not None:
        from .elements import datastores
        stores = datastores(known_elements)
        if p.datastore.name not in stores:
            err("datastore.name", f"unknown datastore '{p.datastore.name}'; known: "
                f"{', '.join(sorted(stores)) or 'none'} (a datastore is an "
                "element folder with a datastore.yaml)")
        info = stores[p.datastore.name].datastore
        if p.datastore.runtime not in info.runtimes:
            err("datastore.runtime", f"'{p.datastore.runtime}' is not supported by the "
                f"{p.datastore.name} element; it supports: {', '.join(info.runtimes)}")
    if known_elements is not None:
        for name in p.elements:
            if name not in known_elements:
                err("elements", f"unknown element '{name}'; see 'trove-image-builder "
                    "elements list', or add its folder with --elements-path")


def load(ref: str, sets=(), known_elements=None) -> Profile:
    """Render, merge, validate and freeze the profile ``ref``.

    ``known_elements`` (from elements.discover) enables the element and
    datastore checks.
    """
    set_vars, set_fields = parse_sets(sets)
    chain = _chain(ref)
    variables: dict = {}
    for path, _text, peek in chain:
        declared = peek.get("variables") or {}
        if not isinstance(declared, dict):
            raise ProfileError(_display(path), "variables", "must be a mapping of NAME: value")
        for key in declared:
            if key in TOP_FIELDS:
                raise ProfileError(_display(path), f"variables.{key}",
                                   "shadows a profile setting; rename the variable")
        variables.update(declared)
    variables.update(set_vars)

    merged: dict = {}
    provenance: dict = {}
    for path, text, _peek in chain:
        data = _parse(path, _render(path, text, variables, strict=True))
        for key in LOADING_KEYS:
            data.pop(key, None)
        deep_merge(merged, data, _display(path), provenance)
    for dotted, value in set_fields:
        _set_dotted(merged, dotted, value, provenance)

    leaf = _display(chain[-1][0])
    profile = _build(Profile, merged, "", provenance, leaf)
    profile = dataclasses.replace(profile, source=str(chain[-1][0]))
    profile = _anchor_user_hook(profile, provenance.get("certificates.user_hook"))
    _validate(profile, provenance, leaf, known_elements)
    return profile


def _anchor_user_hook(profile: Profile, origin: str | None) -> Profile:
    """A relative user_hook is relative to the profile file that names it
    (to the current folder when given with --set)."""
    hook = profile.certificates.user_hook
    if not hook or Path(hook).expanduser().is_absolute() or origin is None:
        return profile
    base = Path.cwd() if origin == "--set" else Path(origin).parent
    anchored = str((base / hook).resolve())
    return dataclasses.replace(profile, certificates=dataclasses.replace(
        profile.certificates, user_hook=anchored))


def from_dict(data: dict, source: str, known_elements=None) -> Profile:
    """A profile from its resolved form (as in a manifest)."""
    profile = _build(Profile, data, "", {}, source)
    profile = dataclasses.replace(profile, source=source)
    _validate(profile, {}, source, known_elements)
    return profile


def describe_settings() -> list[tuple[str, str, str]]:
    """(dotted name, default/choices, help) for every setting."""
    rows = []

    def walk(cls, prefix):
        for f in dataclasses.fields(cls):
            kind = f.metadata.get("kind")
            if kind == "internal":
                continue
            if kind in ("section", "section?"):
                sub = SECTIONS[f.name]
                walk(sub, f"{prefix}{f.name}.")
                continue
            if kind == "images":
                walk(ContainerImage, f"{prefix}{f.name}[].")
                continue
            choices = ("true", "false") if kind == "bool?" else f.metadata.get("choices")
            allowed = " | ".join(choices) if choices else (
                "" if f.default in (None, dataclasses.MISSING) else repr(f.default))
            rows.append((prefix + f.name, allowed, f.metadata.get("help", "")))
    walk(Profile, "")
    return rows
