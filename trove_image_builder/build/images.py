"""Container images preloaded into a guest image: each archive is checked,
turned into a docker-archive when it is an OCI layout (skopeo), and
described by its reference and image ID (the digest of its config), which
is what the engine in the guest reports after loading it."""
from dataclasses import dataclass, field
import json
from pathlib import Path
import tarfile

from ..plumbing import host
from ..errors import HostError, InputError
from ..plumbing.runner import run, sha256_of


@dataclass(frozen=True)
class PreparedImage:
    ref: str
    archive: Path          # a docker-archive on the build host
    image_id: str          # sha256:<config digest>
    archive_sha256: str
    size_bytes: int
    # the exact package versions inside, for an image built here
    packages: dict | None = field(default=None, compare=False)

    def manifest_entry(self) -> dict:
        entry = {"ref": self.ref, "image_id": self.image_id,
                 "archive_sha256": self.archive_sha256, "size_bytes": self.size_bytes,
                 "source": "archive" if self.packages is None else "built"}
        if self.packages is not None:
            entry["packages"] = dict(sorted(self.packages.items()))
        return entry


def docker_archive_id(path: Path) -> str:
    """The image ID of a docker-archive (its single image's config digest)."""
    try:
        with tarfile.open(path) as tar:
            entries = json.load(tar.extractfile("manifest.json"))
    except (tarfile.TarError, KeyError, ValueError, TypeError) as exc:
        raise InputError(f"{path}: not a docker-archive (no readable manifest.json)") from exc
    if len(entries) != 1:
        raise InputError(f"{path}: holds {len(entries)} images; preload one per archive")
    config = entries[0]["Config"]
    return "sha256:" + Path(config).name.removesuffix(".json")


def _kind(path: Path) -> str:
    if path.is_dir():
        if (path / "oci-layout").is_file() and (path / "index.json").is_file():
            return "oci-dir"
        raise InputError(f"{path}: a folder that is not an OCI layout (no oci-layout/index.json)")
    try:
        with tarfile.open(path) as tar:
            names = set(tar.getnames())
    except (tarfile.TarError, OSError) as exc:
        raise InputError(f"{path}: not a tar archive or OCI layout ({exc})") from exc
    names = {n.removeprefix("./") for n in names}
    if "manifest.json" in names:
        return "docker-archive"
    if "oci-layout" in names and "index.json" in names:
        return "oci-tar"
    raise InputError(f"{path}: neither a docker-archive nor an OCI layout")


def prepare(images, workdir: Path, source: str) -> list[PreparedImage]:
    """Check and convert the profile's datastore.images into docker-archives."""
    prepared = []
    for n, image in enumerate(images):
        path = Path(image.archive).expanduser().resolve()
        field = f"{source}: datastore.images[{n}].archive"
        if not path.exists():
            raise InputError(f"{field}: {path} does not exist")
        kind = _kind(path)
        if kind != "docker-archive":
            skopeo = host.which("skopeo")
            if skopeo is None:
                raise HostError(f"{field}: {path} is an OCI layout; converting it needs "
                                "skopeo (install 'skopeo')")
            layout = path
            if kind == "oci-tar":
                layout = workdir / f"oci-{n}"
                layout.mkdir()
                with tarfile.open(path) as tar:
                    tar.extractall(layout, filter="data")
            converted = workdir / f"image-{n}.tar"
            run([skopeo, "copy", "--quiet", f"oci:{layout}",
                 f"docker-archive:{converted}:{image.ref}"])
            path = converted
        prepared.append(PreparedImage(image.ref, path, docker_archive_id(path), sha256_of(path),
                                      path.stat().st_size))
    return prepared


def write_list(prepared: list[PreparedImage], path: Path) -> Path:
    """The list the container-engine element reads: 'ref archive image_id'."""
    path.write_text("".join(f"{p.ref} {p.archive} {p.image_id}\n" for p in prepared))
    return path
