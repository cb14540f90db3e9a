"""Read what is inside an image from its mounted root file system."""
from pathlib import Path
import os
import re


def dpkg_installed(root: Path):
    """The fields of each installed package's stanza in dpkg's status."""
    status = root / "var/lib/dpkg/status"
    if not status.is_file():
        return
    for stanza in status.read_text(errors="replace").split("\n\n"):
        fields = {}
        for line in stanza.splitlines():
            if line and not line[0].isspace() and ":" in line:
                key, _, value = line.partition(":")
                fields[key] = value.strip()
        if fields.get("Package") and fields.get("Status", "").endswith(" installed"):
            yield fields


def dpkg_packages(root: Path) -> dict[str, str]:
    """Installed Debian packages and their versions (from dpkg's status)."""
    packages = {f["Package"]: f.get("Version", "") for f in dpkg_installed(root)}
    return dict(sorted(packages.items()))


def dpkg_installed_sizes(root: Path) -> dict[str, int]:
    """Installed Debian packages and their Installed-Size in bytes (dpkg
    records KiB; a package without the field counts 0; a package installed
    for two architectures counts both)."""
    sizes: dict[str, int] = {}
    for fields in dpkg_installed(root):
        kib = fields.get("Installed-Size", "")
        size = int(kib) * 1024 if kib.isdigit() else 0
        sizes[fields["Package"]] = sizes.get(fields["Package"], 0) + size
    return dict(sorted(sizes.items()))


def os_release(root: Path) -> dict[str, str]:
    path = root / "etc/os-release"
    if not path.exists():
        path = root / "usr/lib/os-release"
    data = {}
    try:
        for line in path.read_text().splitlines():
            key, sep, value = line.partition("=")
            if sep:
                data[key] = value.strip().strip('"')
    except OSError:
        pass
    return data


def _distributions(root: Path, venv: str):
    """(site-packages folder, *.dist-info folder, name, version) of each
    Python distribution in a virtualenv inside the image."""
    for site in (root / venv.lstrip("/")).glob("lib/python3*/site-packages"):
        for meta in site.glob("*.dist-info/METADATA"):
            name = version = None
            for line in meta.read_text(errors="replace").splitlines():
                if line.startswith("Name: "):
                    name = line[6:].strip()
                elif line.startswith("Version: "):
                    version = line[9:].strip()
                if name and version:
                    break
            if name:
                yield site, meta.parent, name, version


def venv_packages(root: Path, venv: str) -> dict[str, str]:
    """Python distributions in a virtualenv inside the image."""
    found = {name.lower(): version or "" for _, _, name, version in _distributions(root, venv)}
    return dict(sorted(found.items()))


def venv_pruned(root: Path, venv: str) -> list[str]:
    """Distributions in the image's virtualenv whose metadata is there but
    none of whose other files are: what the production build's pruning
    (elements/guest-agent/.../prune_venv.py) removed, keeping the metadata.
    An SBOM must not list them as present."""
    pruned = set()
    for site, info, name, _ in _distributions(root, venv):
        record = info / "RECORD"
        if not record.is_file():
            continue
        payload = []
        for line in record.read_text(errors="replace").splitlines():
            rel = line.rsplit(",", 2)[0] if line.count(",") >= 2 else line
            path = Path(os.path.normpath(site / rel)) if rel else None
            if path is not None and info not in path.parents and path != info:
                payload.append(path)
        if payload and not any(p.exists() or p.is_symlink() for p in payload):
            pruned.add(name.lower())
    return sorted(pruned)


def enabled_units(root: Path) -> list[str]:
    """systemd units enabled in the image (symlinks in *.wants folders)."""
    units = set()
    for wants in (root / "etc/systemd/system").glob("*.wants"):
        for link in wants.iterdir():
            units.add(link.name)
    return sorted(units)


def upstream_version(debian_version: str) -> str:
    """'1:10.11.6-0+deb12u1' -> '10.11.6'."""
    version = debian_version.split(":", 1)[-1]
    return re.split(r"[-+~]", version, maxsplit=1)[0]
