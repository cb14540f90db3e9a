"""A docker-archive (what 'docker load' reads) of a one-layer image, written
directly: no registry, no daemon, no conversion tool.

The archive holds manifest.json (the config's file name, the tag, the
layers' file names), the image configuration <digest>.json and the layer
<diff_id>.tar. The engine names the image by its configuration's digest,
which is what 'docker image inspect --format {{.Id}}' reports after the load
(images.docker_archive_id reads it back)."""
import datetime
import hashlib
import io
import json
from pathlib import Path
import tarfile

from ...plumbing.runner import sha256_of


def image_configuration(config: dict, diff_id: str, architecture: str,
                        created: datetime.datetime, created_by: str) -> bytes:
    """The image configuration (OCI image spec 'config', which the docker
    format shares), serialised once: its digest is the image ID."""
    stamp = created.astimezone(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    document = {
        "architecture": architecture,
        "os": "linux",
        "created": stamp,
        "config": config,
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        "history": [{"created": stamp, "created_by": created_by}],
    }
    return json.dumps(document, sort_keys=True, separators=(",", ":")).encode()


def write(layer: Path, ref: str, config: dict, out: Path, *, architecture: str,
          created_by: str, created: datetime.datetime | None = None) -> str:
    """Write the docker-archive out: layer (an uncompressed tar) as the one
    layer, tagged ref. Returns the image ID, 'sha256:<config digest>'."""
    created = created or datetime.datetime.now(datetime.timezone.utc)
    layer_hex = sha256_of(layer)
    blob = image_configuration(config, f"sha256:{layer_hex}", architecture, created,
                               created_by)
    config_hex = hashlib.sha256(blob).hexdigest()
    manifest = json.dumps([{"Config": f"{config_hex}.json", "RepoTags": [ref],
                            "Layers": [f"{layer_hex}.tar"]}]).encode()
    mtime = int(created.timestamp())

    def member(name: str, size: int) -> tarfile.TarInfo:
        info = tarfile.TarInfo(name)
        info.size, info.mtime, info.mode = size, mtime, 0o644
        return info

    with tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as tar:
        with open(layer, "rb") as fh:
            tar.addfile(member(f"{layer_hex}.tar", layer.stat().st_size), fh)
        tar.addfile(member(f"{config_hex}.json", len(blob)), io.BytesIO(blob))
        tar.addfile(member("manifest.json", len(manifest)), io.BytesIO(manifest))
    return f"sha256:{config_hex}"
