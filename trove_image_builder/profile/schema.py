"""The Trove profile schema: every setting declared once (its parser,
allowed values, default and help), frozen into :class:`Profile`, and the
rules between settings (:func:`validate`).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
import hashlib
import json
from pathlib import Path
import re

from ..elements import datastores
from ..errors import ProfileError
from . import agent_python
from .settings import describe, parse_bool, parse_env, parse_str_list, section, setting


@dataclass(frozen=True)
class Distro:
    element: str
    release: str
    mirror_env: str | None


# OS bases: the ones whose archives the builds reach.
DISTROS = {
    "debian": Distro("debian-minimal", "trixie", "DIB_DISTRIBUTION_MIRROR"),
    # noble: jammy's Python (3.10) cannot run current agents (see agent_python)
    "ubuntu": Distro("ubuntu-minimal", "noble", "DIB_DISTRIBUTION_MIRROR"),
}


# Kernel flavours, by OS: the package the image boots. cloud is the default:
# a Trove guest is a virtual machine, and the generic kernels' drivers for
# real hardware are most of their size (Debian trixie: 106 MB installed).
KERNELS = {
    "cloud": {"debian": "linux-image-cloud-amd64", "ubuntu": "linux-image-virtual"},
    "generic": {"debian": "linux-image-amd64", "ubuntu": "linux-image-generic"},
}


def backend_names() -> tuple:
    """The registered image backends (asked for when needed: the build side
    imports the profile, not the reverse)."""
    from ..build.backends import names
    return names()


def _default_release(s) -> str:
    return DISTROS[s["os.distro"]].release


# The guest user by OS: Ubuntu's own ('ubuntu', as Trove's guest images
# have it: integration/scripts/files/elements/guest-agent/install.d/
# guest-agent-source-install/31-guest-agent-install, GUEST_USERNAME);
# elsewhere a user of the image's own.
GUEST_USERS = {"ubuntu": "ubuntu"}
DEFAULT_GUEST_USER = "trove"


def _default_guest_user(s) -> str:
    return GUEST_USERS.get(s["os.distro"], DEFAULT_GUEST_USER)


def _default_cert_hook(s) -> bool:
    return s["variant"] == "production" and s["guest_agent.install"] != "none"


@dataclass(frozen=True, kw_only=True)
class OsSpec:
    distro: str = setting("OS base", default="debian", choices=DISTROS)
    release: str = setting(
        "release; default " + ", ".join(f"{k}: {d.release}" for k, d in DISTROS.items()),
        default_factory=_default_release, default_factory_depends=("os.distro",))
    mirror: str | None = setting("package mirror URL")
    security_mirror: str | None = setting("Debian security mirror URL (debian-security path)")
    kernel: str = setting(
        "kernel flavour: cloud (the distribution's kernel for virtual machines: "
        "Debian's linux-image-cloud-amd64, Ubuntu's linux-image-virtual) or generic "
        "(every driver: linux-image-amd64, linux-image-generic)",
        default="cloud", choices=KERNELS)


@dataclass(frozen=True, kw_only=True)
class ContainerImage:
    ref: str = setting("image reference, as Trove will ask for it (e.g. mariadb:10.11)",
                       required=True)
    archive: str = setting("docker-archive tarball or OCI layout (folder or tar), "
                           "relative to the profile that names it", required=True, path=True)


def _default_image_source(s) -> str | None:
    return "built" if s["datastore.runtime"] == "container" else None


# Where the datastore's own container image (the one Trove's agent runs at
# prepare) comes from.
IMAGE_SOURCES = {
    "built": "made here from Debian packages and preloaded (datastore-image build)",
    "archive": "preloaded from an archive given in datastore.images",
    "pull": "not preloaded: the agent pulls it from a registry at prepare",
}


@dataclass(frozen=True, kw_only=True)
class DatastoreSpec:
    name: str = setting("datastore element (a folder with datastore.yaml)", required=True)
    version: str | None = setting("datastore version")
    runtime: str = setting("how the datastore runs in the guest", default="package",
                           choices=("package", "container"))
    image: str | None = setting(
        "where the container image the agent runs (<docker_image>:<version>) comes "
        "from: " + "; ".join(f"{k}: {v}" for k, v in IMAGE_SOURCES.items()) +
        "; default: built for runtime: container",
        choices=tuple(IMAGE_SOURCES), default_factory=_default_image_source,
        default_factory_depends=("datastore.runtime",))
    images: tuple = section(ContainerImage, many=True)


@dataclass(frozen=True, kw_only=True)
class GuestAgentSpec:
    install: str = setting("where the guest agent comes from", default="release",
                           choices=("release", "source", "none"))
    version: str | None = setting("Trove release, for install: release")
    path: str | None = setting("Trove checkout, for install: source "
                               "(relative to the profile that names it)", path=True)
    pip_index: str | None = setting("package index URL for pip")


# How the boot-time certificate hook finds the data volume.
# (written into a shell settings file in the image: no quoting characters)
_VOLUME_RE = re.compile(r"^(/dev/[A-Za-z0-9._/:-]+|LABEL=[A-Za-z0-9._-]+|UUID=[0-9A-Fa-f-]+)$")


@dataclass(frozen=True, kw_only=True)
class CertificatesSpec:
    enabled: bool = setting(
        "install the boot-time certificate hook (trove-certs); "
        "default: on for production images with a guest agent", parse=parse_bool,
        default_factory=_default_cert_hook,
        default_factory_depends=("variant", "guest_agent.install"))
    volume: str = setting("data volume holding the certificates' copy: "
                          "a device path, LABEL=name or UUID=uuid", default="/dev/vdb")
    user_hook: str | None = setting(
        "your own script, run at boot before the certificates are checked "
        "(relative to the profile that names it)", path=True)


@dataclass(frozen=True, kw_only=True)
class ImageSpec:
    format: str = setting("disk format", default="qcow2", choices=("qcow2", "raw", "vhd"))
    size: str = setting("disk size in GiB, e.g. 4G", default="4G")
    compression: str = setting("qcow2 compression", default="zstd",
                               choices=("zstd", "zlib", "none"))


def _plain(value):
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


@dataclass(frozen=True, kw_only=True)
class Profile:
    name: str = setting("profile name", required=True)
    description: str = setting("one line for 'profiles list'", default="")
    variant: str = setting("production images carry no keys or passwords",
                           default="production", choices=("production", "development"))
    os: OsSpec = section(OsSpec)
    datastore: DatastoreSpec | None = section(DatastoreSpec, optional=True)
    guest_agent: GuestAgentSpec = section(GuestAgentSpec)
    guest_user: str = setting(
        "user the guest agent runs as; default " + ", ".join(
            f"{k}: {GUEST_USERS.get(k, DEFAULT_GUEST_USER)}" for k in DISTROS),
        default_factory=_default_guest_user, default_factory_depends=("os.distro",))
    certificates: CertificatesSpec = section(CertificatesSpec)
    elements: tuple = setting("extra element names", parse=parse_str_list, default=())
    packages: tuple = setting("extra OS packages", parse=parse_str_list, default=())
    image: ImageSpec = section(ImageSpec)
    env: dict = setting("extra DIB_* variables", parse=parse_env, default={})
    backend: str = setting("image backend", default="dib", choices=backend_names)
    # Where it was loaded from; not a setting, not part of the digest.
    source: str = field(default="", compare=False)

    def to_dict(self) -> dict:
        """Every setting as built (defaults resolved, paths absolute)."""
        data = _plain(dataclasses.asdict(self))
        data.pop("source", None)
        return data

    def digest(self) -> str:
        text = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return "sha256:" + hashlib.sha256(text.encode()).hexdigest()

    @property
    def release(self) -> str:
        return self.os.release

    @property
    def cert_hook(self) -> bool:
        """Whether the image gets the boot-time certificate hook."""
        return self.certificates.enabled

    def user_hook_path(self) -> Path | None:
        """The profile's own certificate hook (absolute since loading)."""
        hook = self.certificates.user_hook
        return Path(hook) if hook else None


TOP_FIELDS = tuple(f.name for f in dataclasses.fields(Profile) if "setting" in f.metadata)


def describe_settings() -> list[tuple[str, str, str]]:
    """(dotted name, allowed values / default, help) for every setting."""
    return describe(Profile)


# --------------------------------------------------------------------------
# Rules between settings

_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]*$")
_SIZE_RE = re.compile(r"^[0-9]+(\.[0-9]+)?G?$")

# The first Trove release (Victoria) whose guest agent runs datastores in
# containers on an engine inside the guest.
FIRST_CONTAINER_AGENT = 14


def _major(version: str | None) -> int:
    try:
        return int(str(version).split(".")[0])
    except ValueError:
        return 0


def validate(p: Profile, provenance: dict, leaf: str, known_elements=None) -> None:
    """The rules no single setting can check. ``known_elements`` (from
    elements.discover) enables the element and datastore checks."""
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
    python = agent_python.mismatch(p.os.distro, p.os.release, ga.install, ga.version, ga.path)
    if python is not None:
        err(python.field, python.message)
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
    if certs.user_hook and not certs.enabled:
        err("certificates.user_hook", "runs in the certificate hook, which this image "
            "does not get; set certificates.enabled: true")
    ds = p.datastore
    if ds is not None and ds.images and ds.runtime != "container":
        err("datastore.images", "preloaded images need runtime: container")
    if ds is not None and ds.image and ds.runtime != "container":
        err("datastore.image", f"'{ds.image}' is for runtime: container; leave it out "
            "for runtime: package")
    if ds is not None and ds.runtime == "package" and \
            ga.install == "release" and _major(ga.version) >= FIRST_CONTAINER_AGENT:
        err("datastore.runtime", f"the Trove {ga.version} guest agent runs its datastore "
            "in a container (since Trove 14, Victoria) and cannot manage one from OS "
            "packages; use runtime: container, or guest_agent.install: none")
    if ds is not None and known_elements is not None:
        stores = datastores(known_elements)
        if ds.name not in stores:
            err("datastore.name", f"unknown datastore '{ds.name}'; known: "
                f"{', '.join(sorted(stores)) or 'none'} (a datastore is an "
                "element folder with a datastore.yaml)")
        info = stores[ds.name].datastore
        if ds.runtime not in info.runtimes:
            err("datastore.runtime", f"'{ds.runtime}' is not supported by the "
                f"{ds.name} element; it supports: {', '.join(info.runtimes)}")
        ref = info.image_ref(ds.version)
        given = [i.ref for i in ds.images]
        if ds.image == "archive" and ref not in given:
            err("datastore.image", f"archive: datastore.images has no entry for {ref}, "
                "the image Trove's agent will run (<docker_image>:<datastore version>); "
                f"add {{ref: '{ref}', archive: FILE}} there")
        if ds.image in ("built", "pull") and ref in given:
            err("datastore.image", f"{ds.image}: {ref} is also given in datastore.images; "
                "set datastore.image: archive to preload that archive instead")
    if known_elements is not None:
        for name in p.elements:
            if name not in known_elements:
                err("elements", f"unknown element '{name}'; see 'trove-image-builder "
                    "elements list', or add its folder with --elements-path")
