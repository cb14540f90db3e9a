"""What an image should hold, from the manifest written next to it.

The build writes a ``contract`` section into every manifest (schema 2): the
OS, the guest user, the agent, the datastore as its element described it,
the preloaded images, the certificate hook, the in-image paths. The checks
read only this, never the current elements or profile defaults, so an image
built with user elements, or by an older version of this tool, is verified
against what it was built to hold. Manifests of schema 1 (before the
contract section) are read from their profile and datastore sections.
"""
from dataclasses import MISSING, asdict, dataclass, field, fields, replace
import json
from pathlib import Path

from ..errors import InputError
from .paths import InImagePaths, current

SCHEMA = 2


@dataclass(frozen=True)
class Expectations:
    profile: str
    variant: str
    distro: str
    release: str
    guest_user: str
    agent_install: str                 # release | source | none
    agent_version: str | None
    datastore: str | None              # the datastore element's name
    datastore_manager: str | None      # Trove's datastore_manager for it
    datastore_runtime: str | None      # package | container
    datastore_version: str | None
    server_package: str | None         # the server's OS package, whichever the runtime
    engine_package: str | None         # container runtime: the engine
    datastore_service: str | None      # package runtime: its systemd service
    datastore_query: str | None        # a command printing the server's version
    images: tuple = ()                 # (ref, image_id or None) preloaded
    cert_hook: bool = False            # the boot-time certificate hook (trove-certs)
    cert_user_hook: bool = False       # with the profile's own hook script
    cert_volume: str | None = None
    dev_public_key: str | None = None
    paths: InImagePaths = field(default_factory=current)
    image: str = ""                    # the image file these are for

    @property
    def production(self) -> bool:
        return self.variant == "production"

    @property
    def datastore_package(self) -> str | None:
        """The server package on the host OS (package runtime only)."""
        return self.server_package if self.datastore_runtime == "package" else None

    def to_dict(self) -> dict:
        """The manifest's contract section (without the image file)."""
        data = asdict(self)
        data.pop("image")
        data["images"] = [list(i) for i in self.images]
        data["schema"] = SCHEMA
        return data

    @classmethod
    def from_dict(cls, data: dict, where: str, image: str = "") -> "Expectations":
        if not isinstance(data, dict):
            raise InputError(f"{where}: contract: a JSON object is expected")
        data = dict(data)
        data.pop("schema", None)
        names = {f.name for f in fields(cls)} - {"image"}
        unknown = set(data) - names
        missing = {f.name for f in fields(cls) if f.name not in data
                   and f.default is MISSING and f.default_factory is MISSING}
        if unknown:
            raise InputError(f"{where}: contract: unknown key(s) {', '.join(sorted(unknown))}; "
                             "written by a newer trove-image-builder?")
        if missing:
            raise InputError(f"{where}: contract: missing {', '.join(sorted(missing))}")
        if "paths" in data:
            data["paths"] = InImagePaths.from_dict(data["paths"], where)
        data["images"] = tuple(tuple(i) for i in data.get("images") or ())
        return cls(image=image, **data)

    def for_image(self, image) -> "Expectations":
        return replace(self, image=str(image))


def manifest_path(image: Path) -> Path:
    return image.with_name(image.name + ".manifest.json")


def read_manifest(image: Path) -> dict | None:
    path = manifest_path(image)
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text())
    except ValueError as exc:
        raise InputError(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(manifest, dict):
        raise InputError(f"{path}: not a manifest (a JSON object is expected)")
    return manifest


def from_manifest(image: Path, manifest: dict) -> Expectations:
    where = str(manifest_path(image))
    if "contract" in manifest:
        return Expectations.from_dict(manifest["contract"], where, str(image))
    return _from_schema_1(image, manifest, where)


def _from_schema_1(image: Path, manifest: dict, where: str) -> Expectations:
    """A manifest from before the contract section: what it recorded."""
    try:
        prof = manifest["profile"]["resolved"]
        agent = prof["guest_agent"]
        os_ = prof["os"]
        certs = manifest.get("certificates") or {}
        ds = manifest.get("datastore")
    except (KeyError, TypeError) as exc:
        raise InputError(f"{where}: no resolved profile in the manifest ({exc})") from exc
    release = os_.get("release") or (manifest.get("os") or {}).get("release")
    container = bool(ds) and ds.get("runtime") == "container"
    dev_key = None
    if isinstance(manifest.get("dev_ssh_key"), str):
        pub = Path(manifest["dev_ssh_key"] + ".pub")
        if pub.is_file():
            dev_key = pub.read_text().strip()
    return Expectations(
        profile=prof["name"], variant=prof["variant"], distro=os_["distro"], release=release,
        guest_user=prof["guest_user"], agent_install=agent["install"],
        agent_version=agent.get("version") if agent["install"] == "release" else None,
        datastore=ds["name"] if ds else None, datastore_manager=ds["name"] if ds else None,
        datastore_runtime=ds["runtime"] if ds else None,
        datastore_version=ds.get("version") if ds else None,
        server_package=None if not ds or container else ds.get("package"),
        engine_package=ds.get("package") if container else None,
        datastore_service=None if not ds or container else ds.get("service"),
        datastore_query=None,
        images=tuple((i["ref"], i.get("image_id")) for i in (ds or {}).get("images") or ()),
        cert_hook=bool(certs.get("hook")), cert_user_hook=bool(certs.get("user_hook")),
        cert_volume=certs.get("volume"), dev_public_key=dev_key, image=str(image))


def require_manifest(image: Path, hint: str = "") -> dict:
    """The manifest beside image; InputError (with hint appended) when the
    image or its manifest is missing."""
    image = Path(image)
    if not image.is_file():
        raise InputError(f"{image}: no such image file")
    manifest = read_manifest(image)
    if manifest is None:
        raise InputError(f"{image}: no manifest ({manifest_path(image).name}) next to it"
                         + (f"; {hint}" if hint else ""))
    return manifest


def load(image: Path) -> Expectations:
    """Expectations for image, from the manifest beside it."""
    manifest = require_manifest(image, "name the profile it was built from with --profile")
    return from_manifest(Path(image), manifest)
