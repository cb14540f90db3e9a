"""A build as cached layers, each keyed by a hash of its inputs.

    base    the OS, the datastore (its packages and preloaded images), the
            profile's extra packages and every element not named below:
            built by the backend (DIB: disk-image-create), stored as an
            uncompressed qcow2
    agent   the guest-agent element: a qcow2 overlay on base
    rest    the certificate hook, dev access and the profile's own elements:
            an overlay on agent

The upper layers are applied by running their elements' phases in a chroot
on the mounted overlay (build/chroot_layer.py), at native speed. The image
a build writes is the top of the chain converted into one standalone file.

A layer's key covers everything it is made from: the key of the layer below,
the files of its elements (DIB's own included, for base), the variables its
elements read (a variable naming a host file or folder counts by its
content), the packages, the size and architecture, the preloaded images (by
image ID), diskimage-builder's version and LAYER_FORMAT. Package versions
are not pinned: a layer takes what the archives and the package index serve
when it is built, so a layer older than the maximum age (7 days by default,
TROVE_IMAGE_BUILDER_LAYER_MAX_AGE in days) is rebuilt, and ``build
--refresh`` rebuilds every layer. A layer holding a per-build secret (a
development image's ssh key) is never stored.

An element can only be applied in a chroot when it has no phases that need
DIB's block device or root set-up (root.d, block-device.d, cleanup.d ...) and
everything it depends on is in the layers below; any other element is built
in the base layer, and ``build --explain`` says so.
"""
from dataclasses import dataclass, field, replace
import hashlib
import json
import os
from pathlib import Path

from ..elements import dib_elements_dir
from ..errors import InputError
from .plan import IMAGES_PLACEHOLDER, BuildPlan

# bump when the way a layer is made changes: every cached layer is rebuilt
LAYER_FORMAT = 1

#: element -> the layer it goes to (the profile's own elements go to "rest")
UPPER = {"guest-agent": "agent", "trove-certs": "rest", "dev-access": "rest"}
LAYER_ORDER = ("base", "agent", "rest")

#: the variables an upper element owns (prefixes): only its layer reads them
OWNED_ENV = {
    "guest-agent": ("TROVE_GUEST_AGENT_", "TROVE_BUILD_CA_BUNDLE"),
    "trove-certs": ("TROVE_CERTS_",),
    "dev-access": ("TROVE_DEV_SSH_PUBKEY",),
}
#: variables that change on every build: a layer reading one is not stored
PER_BUILD_ENV = ("TROVE_DEV_SSH_PUBKEY",)
#: what a chroot-applied element may hold
CHROOT_ENTRIES = {"README", "README.rst", "README.md", "element-deps", "environment.d",
                  "extra-data.d", "pre-install.d", "install.d", "post-install.d",
                  "finalise.d", "static", "package-installs.yaml", "datastore.yaml"}
#: DIB elements whose work the chroot runner does itself for upper elements
#: (static files, package-installs.yaml); they stay in the base layer
HELPERS = ("install-static", "package-installs")
#: formats the chain can be converted to
LAYERED_FORMATS = ("qcow2", "raw")
DEFAULT_MAX_AGE_DAYS = 7


@dataclass(frozen=True)
class Layer:
    name: str
    elements: tuple           # what this layer runs (base: the DIB element list)
    inputs: dict              # input name -> digest
    key: str
    cacheable: bool = True
    env: dict = field(default_factory=dict, compare=False)   # what its elements get


@dataclass(frozen=True)
class Layering:
    """The layers of one plan, lowest first, with what went where and why."""
    layers: tuple
    notes: tuple = ()         # e.g. an element moved into the base layer

    @property
    def top(self) -> Layer:
        return self.layers[-1]

    def image_key(self, plan: BuildPlan, backend: str) -> str:
        """The key of the finished image: the top layer, the backend, and
        the output format."""
        img = plan.profile.image
        return _digest({"top": self.top.key, "backend": backend, "format": img.format,
                        "compression": img.compression if img.format == "qcow2" else None})


def _digest(data) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:20]


def files_digest(folder: Path, skip_dirs=(".tox", "__pycache__", ".git"),
                 skip_suffixes=(".pyc",)) -> str:
    """A digest of a folder's files: names, executable bits, contents,
    symlink targets. A .git folder counts by its HEAD (and the commit it
    names), not by its objects."""
    h = hashlib.sha256()
    folder = Path(folder)
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if d not in skip_dirs)
        for name in sorted(filenames):
            if name.endswith(skip_suffixes):
                continue
            path = Path(dirpath) / name
            rel = str(path.relative_to(folder))
            h.update(rel.encode() + b"\0")
            if path.is_symlink():
                h.update(b"L" + os.readlink(path).encode())
            elif path.is_file():
                h.update(b"X" if os.access(path, os.X_OK) else b"F")
                h.update(hashlib.sha256(path.read_bytes()).digest())
    git = folder / ".git"
    if (git / "HEAD").is_file():
        head = (git / "HEAD").read_text().strip()
        h.update(b"HEAD" + head.encode())
        if head.startswith("ref: "):
            ref = git / head[5:]
            if ref.is_file():
                h.update(ref.read_bytes())
    return h.hexdigest()[:20]


def value_digest(name: str, value: str) -> str:
    """A variable's value as an input: a host file or folder by its
    content, the preloaded images list by its refs and image IDs (its
    archives lie in the build's own folder)."""
    path = Path(value)
    if name == "TROVE_CONTAINER_IMAGES_LIST":
        if value == IMAGES_PLACEHOLDER or not path.is_file():
            return "<images not prepared yet>"
        lines = sorted(" ".join((f[0], f[2])) for f in
                       (ln.split() for ln in path.read_text().splitlines()) if len(f) == 3)
        return _digest(lines)
    if value.startswith("/") and path.is_dir():
        return "tree:" + files_digest(path)
    if value.startswith("/") and path.is_file():
        return "file:" + hashlib.sha256(path.read_bytes()).hexdigest()[:20]
    return _digest(value)


def owner_of(var: str) -> str | None:
    for element, prefixes in OWNED_ENV.items():
        if var.startswith(prefixes):
            return element
    return None


def search_paths(plan: BuildPlan) -> str:
    paths = list(plan.elements_path)
    dib = dib_elements_dir()
    if dib:
        paths.append(str(dib))
    return ":".join(paths)


def resolve(names, paths: str) -> dict[str, Path]:
    """Elements with all their dependencies (DIB's own resolver)."""
    from diskimage_builder import element_dependencies as deps
    try:
        return {name: Path(path) for name, path in deps.get_elements(list(names), paths)}
    except Exception as exc:  # noqa: BLE001 - DIB raises plain Exceptions
        raise InputError(f"elements {' '.join(names)}: {exc}") from exc


def _chroot_blockers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name not in CHROOT_ENTRIES
                  and not p.name.startswith("."))


def _direct_deps(folder: Path) -> list[str]:
    deps = folder / "element-deps"
    if not deps.is_file():
        return []
    return [ln.split("#")[0].strip() for ln in deps.read_text().splitlines()
            if ln.split("#")[0].strip()]


def split(plan: BuildPlan) -> tuple[dict[str, list[str]], list[str], dict[str, Path]]:
    """Which elements go to which layer: {layer: [elements]}, notes, and
    every element of the build with its folder."""
    paths = search_paths(plan)
    everything = resolve(plan.elements, paths)
    candidates = [e for e in plan.elements
                  if e in UPPER or e in plan.profile.elements]
    notes = []
    upper: list[str] = []
    for name in candidates:
        folder = everything[name]
        if (folder / "datastore.yaml").is_file():
            continue            # a datastore goes with the OS
        blockers = _chroot_blockers(folder)
        if blockers:
            notes.append(f"{name} is built in the base layer: it has "
                         f"{', '.join(blockers)}, which need DIB's own build")
            continue
        upper.append(name)
    while True:
        base = [e for e in plan.elements if e not in upper]
        base += [h for h in HELPERS if h not in base]
        below = set(resolve(base, paths))
        moved = None
        for name in upper:
            missing = [d for d in _direct_deps(everything[name])
                       if d not in below and d not in upper]
            if missing:
                moved = name
                notes.append(f"{name} is built in the base layer: it depends on "
                             f"{', '.join(missing)}, which no layer below holds")
                break
            below.add(name)
        if moved is None:
            break
        upper.remove(moved)
    layers = {"base": base}
    for name in upper:
        layers.setdefault(UPPER.get(name, "rest"), []).append(name)
    return {k: layers[k] for k in LAYER_ORDER if k in layers}, notes, everything


def plan_layers(plan: BuildPlan, dib_version: str | None = None,
                backend: str = "dib") -> Layering:
    """The layers of plan with their keys. Inputs that exist only once a
    build started (the images list, the dev key) count as they are in the
    plan: a dry run sees placeholders. The base layer is the backend's own
    work (disk-image-create, or the appliance on a DIB base): its key names
    the backend, so an image of one backend never stands on the other's."""
    groups, notes, folders = split(plan)
    if dib_version is None:
        dib_version = _dib_version()
    base_env = {k: v for k, v in plan.env.items() if owner_of(k) is None}
    base_resolved = resolve(groups["base"], search_paths(plan))
    inputs = {"format": LAYER_FORMAT, "diskimage-builder": dib_version,
              "packages": _digest(sorted(plan.packages)), "size": plan.size_gib,
              "arch": plan.arch, "backend": backend}
    for name in sorted(base_resolved):
        inputs[f"element {name}"] = files_digest(base_resolved[name])
    for var in sorted(base_env):
        inputs[f"env {var}"] = value_digest(var, base_env[var])
    layers = [Layer("base", tuple(groups["base"]), inputs, _digest(inputs),
                    env=base_env)]
    for lname in LAYER_ORDER[1:]:
        if lname not in groups:
            continue
        names = groups[lname]
        env = {k: v for k, v in plan.env.items() if owner_of(k) in names}
        inputs = {"format": LAYER_FORMAT, "below": layers[-1].key}
        for name in names:
            inputs[f"element {name}"] = files_digest(folders[name])
        for var in sorted(env):
            inputs[f"env {var}"] = value_digest(var, env[var])
        cacheable = layers[-1].cacheable and not any(v in env for v in PER_BUILD_ENV)
        layers.append(Layer(lname, tuple(names), inputs, _digest(inputs), cacheable,
                            env={**base_env, **env}))
    return Layering(tuple(layers), tuple(notes))


def base_plan(plan: BuildPlan, layer: Layer) -> BuildPlan:
    """The plan the backend builds the base layer from: its elements and
    variables only, as an uncompressed qcow2 (the chain's first file)."""
    prof = plan.profile
    image = replace(prof.image, format="qcow2", compression="none")
    return replace(plan, profile=replace(prof, image=image), elements=layer.elements,
                   env=dict(layer.env), dev_key=None)


def layerable(plan: BuildPlan) -> str | None:
    """Why plan cannot be built in layers, or None."""
    if plan.profile.image.format not in LAYERED_FORMATS:
        return (f"image.format {plan.profile.image.format}: layers are converted to "
                f"{' or '.join(LAYERED_FORMATS)} only")
    return None


def _dib_version() -> str | None:
    try:
        from importlib.metadata import version
        return version("diskimage-builder")
    except Exception:  # noqa: BLE001 - not installed
        return None
