"""The manifest of a built image, named by the image or by the manifest."""
import hashlib
import json
from pathlib import Path
from typing import NamedTuple

from ..contract.expectations import manifest_path, require_manifest
from ..errors import InputError

SUFFIX = ".manifest.json"


class Loaded(NamedTuple):
    image: Path | None          # the image file, when it is there
    manifest: dict
    file: Path                  # the manifest file


def load(path: Path) -> Loaded:
    """The manifest of an image file (its IMAGE.manifest.json beside it) or
    of a manifest file itself (its image beside it, if there)."""
    path = Path(path)
    if path.name.endswith(SUFFIX) or path.suffix == ".json":
        if not path.is_file():
            raise InputError(f"{path}: no such manifest file")
        try:
            manifest = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            raise InputError(f"{path}: not a manifest (unreadable JSON: {e})") from None
        if not isinstance(manifest, dict) or "image" not in manifest:
            raise InputError(f"{path}: not a manifest written by trove-image-builder "
                             "(no 'image' section)")
        image = path.with_name(path.name[:-len(SUFFIX)]) if path.name.endswith(SUFFIX) else None
        return Loaded(image if image is not None and image.is_file() else None, manifest, path)
    manifest = require_manifest(path, "build the image again, or name its manifest")
    return Loaded(path, manifest, manifest_path(path))


def require_built(manifest: dict, where, hint: str = "") -> None:
    """InputError unless the manifest has what reading a built image
    recorded (its image, OS and packages sections)."""
    for key in ("image", "os", "packages"):
        if not isinstance(manifest.get(key), dict):
            raise InputError(f"{where}: not the manifest of a built image (no '{key}' "
                             f"section){hint}")


def manifest_digest(image: Path | None, manifest: dict, path: Path | None = None) -> str:
    """sha256 of the manifest file's bytes, as 'sha256:<hex>'."""
    where = path if path is not None else manifest_path(image)
    if where is not None and Path(where).is_file():
        data = Path(where).read_bytes()
    else:
        data = json.dumps(manifest, sort_keys=True).encode()
    return "sha256:" + hashlib.sha256(data).hexdigest()


def file_hashes(path: Path, algorithms=("sha256", "sha512", "md5")) -> dict[str, str]:
    """{algorithm: hex digest} of a file, in one read: sha256 (the
    manifest's), sha512 (Glance's os_hash_value, the SBOM's), md5 (Glance's
    checksum)."""
    sums = {a: hashlib.new(a, usedforsecurity=False) if a == "md5" else hashlib.new(a)
            for a in algorithms}
    with open(path, "rb") as f:
        while chunk := f.read(4 << 20):
            for h in sums.values():
                h.update(chunk)
    return {a: h.hexdigest() for a, h in sums.items()}
