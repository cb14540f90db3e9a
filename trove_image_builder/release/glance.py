"""Publish a built image to Glance with openstacksdk, as what its manifest
says it is: properties and tags from the manifest, the bytes checked
against the manifest's sha256 first, and an image already in Glance with
the same content reused instead of uploaded again.

The cloud comes from openstacksdk's own configuration: ``--os-cloud NAME``
(clouds.yaml) or the ``OS_*`` variables, including ``OS_AUTH_TYPE=none``
with ``OS_ENDPOINT`` for a Glance without Keystone.
"""
from dataclasses import dataclass, field
from pathlib import Path
import re
import time

from ..errors import InputError, TroveImageBuilderError
from ..plumbing import log
from . import manifests

PREFIX = "trove_image_builder_"
CONTAINER_FORMAT = "bare"
# Trove boots instances and looks images up with its service credentials
# (Trove 26.0.0, trove/common/clients_admin.py nova_client_trove_admin,
# glance_client_trove_admin): its service project must see the image, by
# --owner, by membership of a shared image, or by a public one.
VISIBILITIES = ("private", "shared", "community", "public")
DISK_FORMATS = ("qcow2", "raw")
# Glance's default `hashing_algorithm` (os_hash_algo): the lookup for an
# image already published compares this hash (glance/common/config.py).
HASH_ALGO = "sha512"
CHUNK = 4 << 20


class PublishError(TroveImageBuilderError):
    """Publishing failed: Glance unreachable or refusing, or the image is
    not the one its manifest describes. Exit code 1."""


# --------------------------------------------------------------------------
# What is published: computed from the manifest alone

def trove_tag(manifest: dict) -> str:
    """The tag that marks an image Trove may boot (see tags_for)."""
    return _trove_tag(bool((manifest.get("guest_agent") or {}).get("version")),
                      (manifest.get("profile") or {}).get("variant"))


def _trove_tag(agent: bool, variant: str | None) -> str:
    """``trove`` for a production image with a guest agent. A development
    image gets ``trove-dev`` and an image without an agent ``trove-no-agent``
    instead, so that a datastore version looked up by tags never picks them."""
    if not agent:
        return "trove-no-agent"
    return "trove-dev" if variant == "development" else "trove"


def tags_for(*, agent: bool, variant: str | None, datastore: str | None,
             version: str | None) -> list[str]:
    """The Glance tags of an image (see tags_of); register gives a datastore
    version the same ones."""
    tags = [_trove_tag(agent, variant)]
    if datastore:
        tags.append(datastore)
        if version:
            tags.append(f"{datastore}-{version}")
    return tags


def tags_of(manifest: dict) -> list[str]:
    """The image's Glance tags: the Trove tag, the datastore and the
    datastore with its version (e.g. trove, mariadb, mariadb-11.8).

    Trove finds the image of a datastore version registered with image tags
    and no image id as the newest *active* image carrying *all* of them
    (Trove 26.0.0, trove/common/glance.py get_image_id: ``filters={'tag':
    image_tags, 'status': 'active'}, sort='created_at:desc', limit=1``), so
    publishing a newer build with the same tags moves the datastore version
    to it. An image without a datastore gets the Trove tag alone."""
    ds = manifest.get("datastore") or {}
    return tags_for(agent=bool((manifest.get("guest_agent") or {}).get("version")),
                    variant=(manifest.get("profile") or {}).get("variant"),
                    datastore=ds.get("name"), version=ds.get("version"))


def properties_of(manifest: dict, digest: str) -> dict[str, str]:
    """The image's Glance properties. Glance's own (os_distro, os_version,
    hw_rng_model) for Nova and the schedulers; the rest prefixed, so that a
    site can tell where an image came from and what is in it."""
    os_release = (manifest.get("os") or {}).get("os_release") or {}
    ds = manifest.get("datastore") or {}
    agent = manifest.get("guest_agent") or {}
    profile = manifest.get("profile") or {}
    props = {
        "os_distro": os_release.get("ID") or (manifest.get("os") or {}).get("distro"),
        "os_version": os_release.get("VERSION_ID"),
        "hw_rng_model": "virtio",
        "trove_datastore": ds.get("name"),
        "trove_datastore_version": ds.get("version"),
        "trove_datastore_manager": ds.get("manager"),
        "trove_guest_agent_version": agent.get("version"),
        PREFIX + "version": (manifest.get("tools") or {}).get("trove-image-builder"),
        PREFIX + "profile": profile.get("name"),
        PREFIX + "variant": profile.get("variant"),
        PREFIX + "manifest_digest": digest,
    }
    return {k: str(v) for k, v in props.items() if v not in (None, "")}


def default_name(image: Path, digest: str) -> str:
    """The image file's stem and the first 12 hex digits of the manifest
    digest: prod-mariadb-1a2b3c4d5e6f, one name per build."""
    return f"{Path(image).stem}-{digest.split(':', 1)[-1][:12]}"


@dataclass(frozen=True)
class Publication:
    """One image, as it will be published."""

    image: Path
    name: str
    disk_format: str
    size: int
    sha256: str                      # as the manifest records it
    tags: list = field(default_factory=list)
    properties: dict = field(default_factory=dict)


def plan(path: Path, name: str | None = None) -> Publication:
    """What publishing IMAGE (or its manifest) would send. InputError when
    the image or its manifest is missing or says too little."""
    image, manifest, manifest_file = manifests.load(Path(path))
    if image is None:
        raise InputError(f"{path}: no image file next to this manifest")
    digest = manifests.manifest_digest(image, manifest, manifest_file)
    section = manifest.get("image") or {}
    disk_format = section.get("format") or image.suffix.lstrip(".")
    if disk_format not in DISK_FORMATS:
        raise InputError(f"{manifest_file}: image.format {disk_format!r} is not one of "
                         f"{', '.join(DISK_FORMATS)}")
    if not section.get("sha256"):
        raise InputError(f"{manifest_file}: no image.sha256 to check the image against")
    return Publication(image=image, name=name or default_name(image, digest),
                       disk_format=disk_format, size=image.stat().st_size,
                       sha256=section["sha256"], tags=tags_of(manifest),
                       properties=properties_of(manifest, digest))


def file_hashes(path: Path) -> dict[str, str]:
    """sha256, sha512 (Glance's os_hash_value) and md5 (Glance's checksum)."""
    return manifests.file_hashes(path, ("sha256", HASH_ALGO, "md5"))


def check_hashes(pub: Publication, hashes: dict) -> None:
    """PublishError unless the image is the one its manifest describes."""
    if hashes["sha256"] != pub.sha256:
        raise PublishError(f"{pub.image}: sha256 {hashes['sha256'][:16]}… is not the "
                           f"manifest's {pub.sha256[:16]}…: the file changed since it was "
                           "built (damaged or truncated copy?); nothing uploaded")


# --------------------------------------------------------------------------
# Glance, through openstacksdk

def connect(cloud: str | None = None):
    """An openstacksdk connection: the named cloud of clouds.yaml, else
    OS_CLOUD, else the OS_* variables."""
    import openstack
    from openstack import exceptions as sdk_exc
    try:
        return openstack.connect(cloud=cloud) if cloud else openstack.connect()
    except sdk_exc.ConfigException as e:
        raise InputError(f"cloud configuration: {e}") from None


def _hash_query_image():
    """openstacksdk's Image resource with Glance's ``os_hash_value`` list
    filter, which Glance has (glance/db/sqlalchemy/api.py, _make_conditions_
    from_filters) but openstacksdk's query mapping lacks."""
    from openstack import resource
    from openstack.image.v2 import image as sdk_image

    class ImageByHash(sdk_image.Image):
        _query_mapping = resource.QueryParameters(
            *sdk_image.Image._query_mapping._mapping, "os_hash_value")
    return ImageByHash


def _list_by_hash(conn, **query):
    return _hash_query_image().list(conn.image, **query)


def find_by_hash(conn, hash_value: str, owner: str | None = None):
    """The newest active image with this os_hash_value (owned by owner
    when given), or None."""
    query = {"os_hash_value": hash_value, "status": "active",
             "sort": "created_at:desc"}
    if owner:
        query["owner"] = owner
    for image in _list_by_hash(conn, **query):
        if image.hash_algo in (None, HASH_ALGO):
            return image
    return None


class ProgressReader:
    """A read-only file object for the upload body: streams the file and
    reports how much was sent every few seconds (and at the end). Its length
    gives requests a Content-Length, so the body is sent as read."""

    def __init__(self, f, size: int, every: float = 3.0, report=log.info,
                 clock=time.monotonic):
        self._f, self._size, self._every = f, size, every
        self._report, self._clock = report, clock
        self._start = self._last = clock()
        self.sent = 0
        self._reported_all = False

    def __len__(self):
        return self._size

    def read(self, n: int = -1) -> bytes:
        data = self._f.read(n)
        self.sent += len(data)
        now = self._clock()
        done = self.sent >= self._size
        if not self._reported_all and (done or now - self._last >= self._every):
            self._report(self._line(now))
            self._last, self._reported_all = now, done
        return data

    def _line(self, now: float) -> str:
        mb = 1 << 20
        rate = self.sent / mb / max(now - self._start, 1e-3)
        pct = 100 * self.sent // max(self._size, 1)
        return (f"upload: {pct}% ({self.sent // mb}/{self._size // mb} MiB, "
                f"{rate:.0f} MiB/s)")


def _html_free(text: str) -> str:
    return " ".join(re.sub(r"<[^>]+>", " ", str(text)).split())


def _translated(conn, exc: Exception) -> TroveImageBuilderError | None:
    """A one-line error for what openstacksdk or keystoneauth raised; None
    for anything else (a bug: the CLI reports it as an internal error)."""
    from keystoneauth1 import exceptions as ks_exc
    from openstack import exceptions as sdk_exc
    seen = exc
    while seen is not None:           # openstacksdk wraps some in SDKException
        if isinstance(seen, ks_exc.ConnectionError):
            m = re.search(r"connection to (\S+?):?\s", str(seen))
            url = m.group(1) if m else _endpoint(conn)
            auth_url = str((conn.config.auth or {}).get("auth_url") or "") if conn else ""
            what = "Keystone" if auth_url and url.startswith(auth_url.rstrip("/")) \
                else "Glance"
            return PublishError(f"{what} unreachable at {url}: {_reason(seen)}")
        if isinstance(seen, ks_exc.DiscoveryFailure) and "Unable to find" in str(seen):
            m = re.search(r" at (\S+?),", str(seen))
            return PublishError(f"Glance unreachable at {m.group(1) if m else _endpoint(conn)}"
                                ": no answer to version discovery")
        if isinstance(seen, (ks_exc.MissingAuthPlugin, ks_exc.MissingRequiredOptions,
                             ks_exc.NoMatchingPlugin)):
            return InputError(f"no cloud to publish to ({_html_free(seen)}): name one "
                              "with --os-cloud or OS_CLOUD, or set the OS_* variables")
        if isinstance(seen, (sdk_exc.HttpException, ks_exc.HttpError)):
            code = getattr(seen, "status_code", None) or getattr(seen, "http_status", "")
            detail = _html_free(getattr(seen, "details", None)
                                or getattr(seen, "message", None) or seen)[:300]
            if code in (401, 403) or isinstance(seen, ks_exc.Unauthorized):
                return PublishError(f"authorization refused ({code}) by {_endpoint(conn)}: "
                                    f"{detail}")
            return PublishError(f"Glance at {_endpoint(conn)} answered {code}: {detail}")
        if isinstance(seen, ks_exc.EndpointNotFound):
            return PublishError(f"no image service (Glance) in the cloud's catalog: {seen}")
        seen = seen.__cause__ or seen.__context__
    return None


def _reason(exc: Exception) -> str:
    """'Connection refused' and the like, from the bottom of a connection
    error's message."""
    m = re.search(r"\[Errno -?\d+\] ([^'\")\]]+)", str(exc))
    if m:
        return m.group(1).strip()
    return "timed out" if "timeout" in type(exc).__name__.lower() else "cannot connect"


def _endpoint(conn) -> str:
    """Where Glance is, as far as the configuration says, without a request."""
    if conn is None:
        return "?"
    config = conn.config
    return (config.get_endpoint("image") or (config.auth or {}).get("endpoint")
            or (config.auth or {}).get("auth_url") or "?")


def _read_back(image, keys) -> dict:
    """The properties named by keys, as Glance holds them: openstacksdk
    keeps the ones its Image knows (os_distro ...) as attributes."""
    props = image.properties or {}
    return {k: props[k] if k in props else getattr(image, k, None) for k in keys}


def _converge(conn, image, pub: Publication, visibility: str, owner: str | None) -> list:
    """Bring a reused image's tags, properties, visibility and owner to
    what this publish asks; the names of what changed."""
    changed = []
    have = _read_back(image, pub.properties)
    updates = {k: v for k, v in pub.properties.items() if have.get(k) != v}
    if image.visibility != visibility:
        updates["visibility"] = visibility
    if owner and image.owner != owner:
        updates["owner"] = owner
    if updates:
        # openstacksdk sends the difference between the property set given
        # and the image's: the image's own go along (Glance's read-only
        # 'stores' too, or it would be removed, which Glance refuses)
        known = {k: v for k, v in updates.items() if hasattr(type(image), k)}
        extra = {k: v for k, v in updates.items() if k not in known}
        if extra:
            known["properties"] = {**(image.properties or {}), **extra}
        conn.image.update_image(image, **known)
        changed += sorted(updates)
    for tag in pub.tags:
        if tag not in (image.tags or []):
            conn.image.add_tag(image, tag)
            changed.append(f"tag:{tag}")
    return changed


def publish_image(path: Path, *, cloud: str | None = None, name: str | None = None,
                  visibility: str = "private", owner: str | None = None,
                  connection=None) -> dict:
    """Publish the image at path (or named by its manifest) to Glance:
    check it against its manifest, reuse an active image with the same
    content or upload it, and return what Glance holds: id, name, status,
    checksum, os_hash_value, tags, properties, visibility, owner, reused."""
    if visibility not in VISIBILITIES:
        raise InputError(f"visibility {visibility!r}: one of {', '.join(VISIBILITIES)}")
    pub = plan(path, name)
    timings = {}
    with log.step(f"hash {pub.image.name} ({pub.size >> 20} MiB)", timings, "hash"):
        hashes = file_hashes(pub.image)
        check_hashes(pub, hashes)
    conn = connection
    try:
        if conn is None:
            conn = connect(cloud)
        return _publish(conn, pub, hashes, visibility, owner, timings)
    except TroveImageBuilderError:
        raise
    except Exception as e:
        error = _translated(conn, e)
        if error is None:
            raise
        raise error from None


def dry_run(path: Path, *, name: str | None = None, visibility: str = "private",
            owner: str | None = None) -> dict:
    """What publish_image would send, after the same checks of the image
    against its manifest; Glance is not contacted."""
    if visibility not in VISIBILITIES:
        raise InputError(f"visibility {visibility!r}: one of {', '.join(VISIBILITIES)}")
    pub = plan(path, name)
    hashes = file_hashes(pub.image)
    check_hashes(pub, hashes)
    return {"dry_run": True, "name": pub.name, "image": str(pub.image), "size": pub.size,
            "disk_format": pub.disk_format, "container_format": CONTAINER_FORMAT,
            "visibility": visibility, "owner": owner, "checksum": hashes["md5"],
            "os_hash_algo": HASH_ALGO, "os_hash_value": hashes[HASH_ALGO],
            "tags": sorted(pub.tags), "properties": pub.properties}


def _publish(conn, pub, hashes, visibility, owner, timings) -> dict:
    with log.step("look for the image in Glance", timings, "lookup"):
        try:
            project = owner or conn.current_project_id
        except Exception:        # no token scope (auth_type none): any owner
            project = owner
        found = find_by_hash(conn, hashes[HASH_ALGO], project)
    changed = []
    if found is not None:
        log.info(f"already there: {found.id} ({found.name}); not uploaded again")
        changed = _converge(conn, found, pub, visibility, owner)
        image_id = found.id
    else:
        extra = {"owner": owner} if owner else {}
        try:
            with log.step(f"upload to Glance as {pub.name}", timings, "upload"), \
                    open(pub.image, "rb") as f:
                created = conn.image.create_image(
                    pub.name, data=ProgressReader(f, pub.size), size=pub.size,
                    disk_format=pub.disk_format, container_format=CONTAINER_FORMAT,
                    tags=list(pub.tags), visibility=visibility, allow_duplicates=True,
                    md5=hashes["md5"], sha256=hashes["sha256"], validate_checksum=False,
                    **extra, **pub.properties)
        except BaseException:       # a failed or interrupted upload leaves no image
            _remove_unfinished(conn, pub)
            raise
        image_id = created.id
    image = conn.image.get_image(image_id)
    if found is None:
        _check_stored(conn, image, hashes)
    return {
        "id": image.id, "name": image.name, "status": image.status,
        "reused": found is not None, "updated": changed,
        "visibility": image.visibility, "owner": image.owner,
        "disk_format": image.disk_format, "container_format": image.container_format,
        "size": image.size, "checksum": image.checksum,
        "os_hash_algo": image.hash_algo, "os_hash_value": image.hash_value,
        "tags": sorted(image.tags or []),
        "properties": _read_back(image, pub.properties),
        "seconds": timings,
    }


def _remove_unfinished(conn, pub: Publication) -> None:
    """Delete the image record this upload made and did not fill: its name
    and manifest digest, not active. Best effort: the error that brought us
    here is the one reported."""
    digest = pub.properties.get(PREFIX + "manifest_digest")
    try:
        for image in conn.image.images(name=pub.name):
            if image.status != "active" and \
                    (image.properties or {}).get(PREFIX + "manifest_digest") == digest:
                log.info(f"removing the unfinished image {image.id} ({image.status})")
                conn.image.delete_image(image, ignore_missing=True)
    except Exception as exc:      # Glance gone: nothing more to do here
        log.info(f"could not look for an unfinished image named {pub.name}: {exc}")


def _check_stored(conn, image, hashes: dict) -> None:
    """What Glance computed of the upload must be what was read here;
    otherwise the image is deleted again."""
    wrong = image.status != "active" or (image.checksum and image.checksum != hashes["md5"]) \
        or (image.hash_algo == HASH_ALGO and image.hash_value != hashes[HASH_ALGO])
    if wrong:
        conn.image.delete_image(image, ignore_missing=True)
        raise PublishError(f"Glance stored image {image.id} as {image.status} with checksum "
                           f"{image.checksum}, not the file's {hashes['md5']}; deleted it")
