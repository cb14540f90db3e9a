"""Discover DIB elements: the shipped ones, the user's, and DIB's own.

An element folder that holds a ``datastore.yaml`` is a datastore: adding a
datastore means adding one element folder (and a profile that names it).
"""
from dataclasses import dataclass
from pathlib import Path
import importlib.util

import yaml

from . import shipped_dir
from .errors import InputError


@dataclass(frozen=True)
class DatastoreInfo:
    name: str
    runtimes: tuple
    package: str          # may hold {version}
    service: str
    data_dir: str
    query: str
    manager: str = ""     # Trove's datastore_manager (default: the name)
    docker_image: str = ""  # the agent's [<manager>] docker_image default (default: manager)

    def __post_init__(self):
        if not self.manager:
            object.__setattr__(self, "manager", self.name)
        if not self.docker_image:
            object.__setattr__(self, "docker_image", self.manager)

    def image_ref(self, version: str | None) -> str:
        """The container image the agent runs for version: Trove's agent
        starts '<[manager] docker_image>:<ds_version>'
        (trove/guestagent/datastore/mysql_common/service.py and
        postgres/service.py, start_db)."""
        return f"{self.docker_image}:{version or 'latest'}"

    def package_for(self, version: str) -> str:
        return self.package.format(version=version)


@dataclass(frozen=True)
class Element:
    name: str
    path: Path
    origin: str           # shipped | user | dib
    description: str
    datastore: DatastoreInfo | None = None


def dib_elements_dir() -> Path | None:
    """DIB's own elements folder, if diskimage-builder is installed."""
    spec = importlib.util.find_spec("diskimage_builder")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / "elements"
    return path if path.is_dir() else None


def search_path(extra=()) -> list[tuple[Path, str]]:
    """Folders to look for elements in, first match wins."""
    paths = [(shipped_dir("elements"), "shipped")]
    paths += [(Path(p).resolve(), "user") for p in extra]
    dib = dib_elements_dir()
    if dib:
        paths.append((dib, "dib"))
    return paths


def _description(folder: Path) -> str:
    readme = folder / "README.rst"
    if not readme.is_file():
        return ""
    lines = [ln.strip() for ln in readme.read_text(errors="replace").splitlines()]
    for ln in lines:
        if ln and not set(ln) <= set("=-~`#*^") and ln != folder.name:
            return ln
    return ""


def _datastore(folder: Path) -> DatastoreInfo | None:
    spec = folder / "datastore.yaml"
    if not spec.is_file():
        return None
    try:
        data = yaml.safe_load(spec.read_text())
        return DatastoreInfo(
            name=data["name"], runtimes=tuple(data["runtimes"]),
            package=data["package"], service=data["service"],
            data_dir=data["data_dir"], query=data.get("query", ""),
            manager=data.get("manager", ""), docker_image=data.get("docker_image", ""))
    except (yaml.YAMLError, KeyError, TypeError) as exc:
        raise InputError(f"{spec}: not a valid datastore description ({exc}); "
                         "it needs name, runtimes, package, service, data_dir") from exc


def discover(extra=()) -> dict[str, Element]:
    """All elements by name; an earlier folder shadows a later one."""
    for path in extra:
        if not Path(path).is_dir():
            raise InputError(f"--elements-path {path}: no such folder")
    found: dict[str, Element] = {}
    for folder, origin in search_path(extra):
        for child in sorted(folder.iterdir()):
            if not child.is_dir() or child.name.startswith((".", "_")):
                continue
            if child.name in found:
                continue
            found[child.name] = Element(
                name=child.name, path=child, origin=origin,
                description=_description(child),
                datastore=_datastore(child) if origin != "dib" else None)
    return found


def datastores(found: dict[str, Element]) -> dict[str, Element]:
    return {e.datastore.name: e for e in found.values() if e.datastore}
