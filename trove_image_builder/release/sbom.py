"""A CycloneDX SBOM of a built image, made from its manifest.

What the manifest recorded from inside the image becomes components: every
OS package (pkg:deb), the guest agent's Python packages (pkg:pypi), each
preloaded container image (pkg:docker, its own packages nested in it), the
distribution and the datastore. The document is made with
cyclonedx-python-lib's model, serialised by its JSON outputter and validated
against the library's own schema before anyone sees it.

Reproducible: the timestamp is the manifest's built_at and the serial number
a uuid5 of the image's SHA-256, so the same manifest gives the same bytes
(with the image file present, its SHA-256 is checked and its SHA-512 added).
"""
from dataclasses import dataclass
from datetime import datetime
import json
import os
from pathlib import Path
import re
import uuid

from cyclonedx.model import HashAlgorithm, HashType, Property
from cyclonedx.model.bom import Bom, BomMetaData
from cyclonedx.model.component import Component, ComponentType
from cyclonedx.output.json import JsonV1Dot7
from cyclonedx.schema import SchemaVersion
from cyclonedx.validation.json import JsonStrictValidator
from packageurl import PackageURL

from .. import __version__
from ..errors import ExitCode, InputError, TroveImageBuilderError
from . import manifests

SCHEMA = SchemaVersion.V1_7          # the newest the library writes and validates
OUTPUT = JsonV1Dot7
SUFFIX = ".sbom.cdx.json"
# The manifest records no architecture: the builder makes amd64 images only
# (build.plan.BuildPlan.arch, datastore images' ARCH).
ARCH = "amd64"
# uuid5 namespace of the serial numbers: one image (by its SHA-256), one serial
SERIAL_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "urn:trove-image-builder:sbom")
PROP = "trove-image-builder:"        # our properties' namespace (CycloneDX taxonomy)


class InvalidSbom(TroveImageBuilderError):
    """The document made does not validate: a bug here, not the user's."""

    exit_code = ExitCode.INTERNAL


@dataclass(frozen=True)
class Sbom:
    text: str        # the CycloneDX JSON document
    counts: dict     # component counts by kind, and total
    image: Path | None
    sha256_checked: bool


def default_path(path: Path) -> Path:
    """IMAGE.sbom.cdx.json beside the image, or beside the manifest named."""
    path = Path(path)
    if path.name.endswith(manifests.SUFFIX):
        return path.with_name(path.name[:-len(manifests.SUFFIX)] + SUFFIX)
    if path.suffix == ".json":
        return path.with_name(path.stem + SUFFIX)
    return path.with_name(path.name + SUFFIX)


def pypi_name(name: str) -> str:
    """The normalised name of a Python distribution (PEP 503), as purls want it."""
    return re.sub(r"[-_.]+", "-", name).lower()


def split_ref(ref: str) -> tuple[str | None, str | None, str, str | None]:
    """(registry, namespace, name, tag) of a container image reference."""
    ref = ref.split("@", 1)[0]
    path, tag = ref, None
    if ":" in ref.rsplit("/", 1)[-1]:
        path, tag = ref.rsplit(":", 1)
    parts = path.split("/")
    registry = None
    if len(parts) > 1 and ("." in parts[0] or ":" in parts[0] or parts[0] == "localhost"):
        registry, parts = parts[0], parts[1:]
    namespace = "/".join(parts[:-1]) or None
    return registry, namespace, parts[-1], tag


def _props(**values) -> list[Property]:
    return [Property(name=PROP + key, value=str(value))
            for key, value in values.items() if value not in (None, "", [], {})]


def _deb(name: str, version: str, namespace: str, codename: str | None,
         bom_ref: str | None = None) -> Component:
    qualifiers = {"arch": ARCH}
    if codename:
        qualifiers["distro"] = codename
    purl = PackageURL(type="deb", namespace=namespace, name=name, version=version,
                      qualifiers=qualifiers)
    return Component(type=ComponentType.LIBRARY, name=name, version=version, purl=purl,
                     bom_ref=bom_ref or purl.to_string())


def _container_distro(packages: dict) -> str | None:
    """The distribution a container image's packages come from, by its
    base-files version (the manifest records its packages, not its OS)."""
    base = packages.get("base-files")
    if not base:
        return None
    return "ubuntu" if "ubuntu" in base else "debian"


def _container(entry: dict) -> tuple[Component, int]:
    """A preloaded image, its packages nested in it; and their count."""
    registry, namespace, name, tag = split_ref(entry["ref"])
    image_id = entry.get("image_id") or ""
    qualifiers = {k: v for k, v in (("tag", tag), ("repository_url", registry)) if v}
    purl = PackageURL(type="docker", namespace=namespace, name=name,
                      version=image_id or None, qualifiers=qualifiers)
    hashes = [HashType(alg=HashAlgorithm.SHA_256, content=image_id.split(":", 1)[1])] \
        if image_id.startswith("sha256:") else []
    comp = Component(type=ComponentType.CONTAINER, name=name, version=tag or image_id,
                     purl=purl, bom_ref=purl.to_string(), hashes=hashes,
                     properties=_props(ref=entry["ref"], image_id=image_id,
                                       archive_sha256=entry.get("archive_sha256"),
                                       archive_bytes=entry.get("size_bytes"),
                                       source=entry.get("source")))
    packages = entry.get("packages") or {}
    distro = _container_distro(packages)
    for pkg, version in sorted(packages.items()):
        if distro:
            # bom-refs are unique in a BOM: the same package may be in the guest too
            comp.components.add(_deb(pkg, version, distro, None,
                                     bom_ref=f"{purl.to_string()}#{pkg}"))
        else:
            comp.components.add(Component(type=ComponentType.LIBRARY, name=pkg,
                                          version=version,
                                          bom_ref=f"{purl.to_string()}#{pkg}"))
    return comp, len(packages)


def _require(manifest: dict, where: Path) -> None:
    manifests.require_built(manifest, where, "; build the image again")
    if not manifest["image"].get("sha256"):
        raise InputError(f"{where}: the manifest records no image SHA-256")


def bom_of(manifest: dict, image: Path | None = None,
           manifest_file: Path | None = None) -> tuple[Bom, dict, bool]:
    """The BOM of a manifest (image: the image file, checked and hashed when
    given); with its component counts and whether the SHA-256 was checked."""
    _require(manifest, manifest_file or image)
    info = manifest["image"]
    hashes = [HashType(alg=HashAlgorithm.SHA_256, content=info["sha256"])]
    checked = False
    if image is not None and Path(image).is_file():
        sums = manifests.file_hashes(image, ("sha256", "sha512"))
        sha256, sha512 = sums["sha256"], sums["sha512"]
        if sha256 != info["sha256"]:
            raise InputError(f"{image}: its SHA-256 is {sha256}, its manifest says "
                             f"{info['sha256']}: the image changed after it was built")
        hashes.append(HashType(alg=HashAlgorithm.SHA_512, content=sha512))
        checked = True
    profile = manifest.get("profile") or {}
    os_info = manifest["os"]
    os_release = os_info.get("os_release") or {}
    distro = os_info.get("distro") or os_release.get("ID")
    codename = os_info.get("release") or os_release.get("VERSION_CODENAME")
    agent = manifest.get("guest_agent") or {}
    datastore = manifest.get("datastore") or {}
    digest = manifests.manifest_digest(image, manifest, manifest_file) \
        if manifest_file is not None else None
    # A qcow2 (or raw) disk image is a file, the thing shipped and uploaded;
    # its hashes are the file's. What runs from it (the distribution, its
    # packages) are components inside it: 'operating-system' is the
    # distribution below, not the image.
    root = Component(
        type=ComponentType.FILE, name=profile.get("name") or info.get("file") or "image",
        version=manifest.get("built_at") or info["sha256"], bom_ref=f"image:{info['sha256']}",
        description=f"Trove guest image {info.get('file')} ({info.get('format')})",
        hashes=hashes,
        properties=_props(
            file=info.get("file"), format=info.get("format"), size_bytes=info.get("size_bytes"),
            virtual_size_bytes=info.get("virtual_size_bytes"),
            profile_digest=profile.get("digest"), variant=profile.get("variant"),
            manifest_digest=digest, arch=ARCH, backend=manifest.get("backend"),
            agent_install=agent.get("install"), agent_version=agent.get("version"),
            agent_venv=agent.get("venv"),
            services_enabled=",".join(manifest.get("services_enabled") or []),
            **{f"built_with:{k}": v for k, v in sorted((manifest.get("tools") or {}).items())}))
    tool = Component(type=ComponentType.APPLICATION, name="trove-image-builder",
                     version=__version__)
    built_at = manifest.get("built_at")
    meta = BomMetaData(component=root,
                       timestamp=datetime.fromisoformat(built_at) if built_at else None)
    meta.tools.components.add(tool)
    bom = Bom(serial_number=uuid.uuid5(SERIAL_NAMESPACE, info["sha256"]), metadata=meta)

    top: list[Component] = []
    os_comp = Component(type=ComponentType.OPERATING_SYSTEM, name=distro or "linux",
                        version=os_release.get("VERSION_ID") or codename,
                        bom_ref=f"os:{distro}@{os_release.get('VERSION_ID') or codename}",
                        description=os_release.get("PRETTY_NAME"),
                        properties=_props(codename=codename))
    top.append(os_comp)
    debs = [_deb(name, version, distro, codename)
            for name, version in sorted(manifest["packages"].items())]
    top += debs
    venv = agent.get("venv")
    # distributions whose code the production build removed (only their
    # metadata is in the image): not in the image, so not in its SBOM
    pruned = set(agent.get("pruned_packages") or ())
    pys = [Component(type=ComponentType.LIBRARY, name=name, version=version,
                     purl=PackageURL(type="pypi", name=pypi_name(name), version=version),
                     bom_ref=PackageURL(type="pypi", name=pypi_name(name),
                                        version=version).to_string(),
                     properties=_props(venv=venv))
           for name, version in sorted((agent.get("python_packages") or {}).items())
           if name not in pruned]
    top += pys
    containers, nested = [], 0
    for entry in datastore.get("images") or []:
        comp, count = _container(entry)
        containers.append(comp)
        nested += count
    top += containers
    ds_comp = None
    if datastore.get("name"):
        ds_comp = Component(
            type=ComponentType.APPLICATION, name=datastore["name"],
            version=datastore.get("version"),
            bom_ref=f"datastore:{datastore['name']}@{datastore.get('version')}",
            description="the Trove datastore this image serves",
            properties=_props(manager=datastore.get("manager"),
                              runtime=datastore.get("runtime"),
                              package=datastore.get("package"),
                              package_version=datastore.get("package_version"),
                              service=datastore.get("service")))
        top.append(ds_comp)
    for comp in top:
        bom.components.add(comp)
    # the image holds the distribution (which holds the OS packages), the
    # agent's packages, the preloaded images and the datastore
    bom.register_dependency(root, [c for c in top if c.purl is None or c.purl.type != "deb"])
    bom.register_dependency(os_comp, debs)
    if ds_comp is not None:
        server = (manifest.get("contract") or {}).get("server_package")
        runs_on = containers if datastore.get("runtime") == "container" else \
            [d for d in debs if d.name in (server, datastore.get("package"))]
        bom.register_dependency(ds_comp, runs_on)
    counts = {"os_packages": len(debs), "python_packages": len(pys),
              "python_packages_pruned": len(pruned),
              "container_images": len(containers), "container_packages": nested,
              "operating_system": 1, "datastore": int(ds_comp is not None)}
    counts["total"] = sum(v for k, v in counts.items() if k != "python_packages_pruned")
    return bom, counts, checked


def validate(text: str) -> None:
    """The library's JSON schema validator, strict; InvalidSbom with its message."""
    error = JsonStrictValidator(SCHEMA).validate_str(text)
    if error is not None:
        detail = getattr(error.data, "message", str(error.data))
        where = getattr(error.data, "json_path", "")
        raise InvalidSbom(f"internal error: the SBOM does not validate against CycloneDX "
                          f"{SCHEMA.to_version()}: {detail}" + (f" (at {where})" if where else ""))


def render(bom: Bom) -> str:
    """The BOM as CycloneDX JSON, validated."""
    text = OUTPUT(bom).output_as_string(indent=2) + "\n"
    validate(text)
    return text


def load(path: Path) -> tuple[Path | None, dict, Path]:
    """(image or None, manifest, manifest file) of an image or a manifest
    file; InputError when it is not the manifest of a built image."""
    image, manifest, manifest_file = manifests.load(Path(path))
    _require(manifest, manifest_file)
    return image, manifest, manifest_file


def of(image: Path | None, manifest: dict, manifest_file: Path) -> Sbom:
    """The SBOM of what load() returned (the image hashed when there)."""
    bom, counts, checked = bom_of(manifest, image, manifest_file)
    return Sbom(render(bom), counts, image, checked)


def make(path: Path) -> Sbom:
    """The SBOM of an image or a manifest file (see manifests.load)."""
    return of(*load(path))


def write(sbom: Sbom, out: Path) -> Path:
    """Write the document to out (replaced whole: a temporary file renamed)."""
    out = Path(out)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(sbom.text)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return out


def summary(sbom: Sbom, out: str) -> str:
    """The result line: where it went and what it counts (JSON)."""
    return json.dumps({"sbom": out, "components": sbom.counts,
                       "image_sha256_checked": sbom.sha256_checked,
                       "spec_version": SCHEMA.to_version()})
