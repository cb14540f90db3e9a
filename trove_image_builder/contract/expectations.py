"""What an image should hold, from the manifest written next to it (or from
a profile): the checks read this, not the profile itself."""
from dataclasses import dataclass
import json
from pathlib import Path

from .. import elements, profile as profiles
from ..errors import InputError

AGENT_VENV = "/opt/guest-agent-venv"
AGENT_UNIT = "guest-agent.service"
# Where the certificate hook (elements/trove-certs) takes delivered files from.
CERT_STAGING = "/var/lib/trove-certs/incoming"


@dataclass(frozen=True)
class Expectations:
    image: str
    profile: str
    variant: str
    distro: str
    release: str
    guest_user: str
    agent_install: str
    agent_version: str | None
    datastore: str | None
    datastore_runtime: str | None
    datastore_package: str | None      # the server package (package runtime)
    server_package: str | None         # its name, whichever the runtime
    engine_package: str | None         # container runtime: the engine
    datastore_version: str | None
    datastore_service: str | None
    datastore_query: str | None
    dev_public_key: str | None
    images: tuple = ()                 # (ref, image_id or None) preloaded
    cert_hook: bool = False            # the boot-time certificate hook (trove-certs)
    cert_user_hook: bool = False       # with the profile's own hook script

    @property
    def production(self) -> bool:
        return self.variant == "production"

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def manifest_path(image: Path) -> Path:
    return image.with_name(image.name + ".manifest.json")


def from_profile(image: Path, prof: profiles.Profile, dev_key_text=None,
                 images=None) -> Expectations:
    ds = prof.datastore
    info = None
    if ds is not None:
        info = elements.datastores(elements.discover())[ds.name].datastore
    return Expectations(
        image=str(image), profile=prof.name, variant=prof.variant,
        distro=prof.os.distro, release=prof.release, guest_user=prof.guest_user,
        agent_install=prof.guest_agent.install,
        agent_version=prof.guest_agent.version if prof.guest_agent.install == "release" else None,
        datastore=ds.name if ds else None,
        datastore_runtime=ds.runtime if ds else None,
        datastore_package=info.package_for(ds.version or "")
        if info and ds.runtime == "package" else None,
        server_package=info.package_for(ds.version or "") if info else None,
        engine_package="docker.io" if ds and ds.runtime == "container" else None,
        datastore_version=ds.version if ds else None,
        datastore_service=info.service if info else None,
        datastore_query=info.query if info else None,
        dev_public_key=dev_key_text,
        images=tuple(images) if images is not None else
        tuple((i.ref, None) for i in (ds.images if ds else ())),
        cert_hook=prof.cert_hook, cert_user_hook=bool(prof.certificates.user_hook))


def load(image: Path, profile_ref: str | None = None, sets=()) -> Expectations:
    """Expectations for image: from --profile if given, else its manifest."""
    image = Path(image)
    if not image.is_file():
        raise InputError(f"{image}: no such image file")
    manifest = None
    mpath = manifest_path(image)
    if mpath.is_file():
        try:
            manifest = json.loads(mpath.read_text())
        except ValueError as exc:
            raise InputError(f"{mpath}: not valid JSON ({exc})") from exc
        if not isinstance(manifest, dict):
            raise InputError(f"{mpath}: not a manifest (a JSON object is expected)")
    dev_key = None
    if manifest and isinstance(manifest.get("dev_ssh_key"), str):
        pub = Path(manifest["dev_ssh_key"] + ".pub")
        if pub.is_file():
            dev_key = pub.read_text().strip()
    images = None
    if manifest and (manifest.get("datastore") or {}).get("images") is not None:
        images = [(i["ref"], i["image_id"]) for i in manifest["datastore"]["images"]]
    if profile_ref:
        prof = profiles.load(profile_ref, sets, known_elements=elements.discover())
        return from_profile(image, prof, dev_key, images)
    if manifest is None:
        raise InputError(f"{image}: no manifest ({mpath.name}) next to it; "
                         "name the profile it was built from with --profile")
    try:
        resolved = manifest["profile"]["resolved"]
        prof = profiles.from_dict(resolved, source=str(mpath))
    except (KeyError, TypeError) as exc:
        raise InputError(f"{mpath}: no resolved profile in the manifest ({exc})") from exc
    return from_profile(image, prof, dev_key, images)
