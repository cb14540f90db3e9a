"""What takes the room in an image, read from its mounted root file system:
the manifest's ``sizes`` section.

Every size is in bytes, and every size measured on the file system is disk
usage (``os.lstat`` ``st_blocks * 512``, as ``du -B1`` counts it): a sparse
file counts what it holds, a hard-linked file counts once per walk, a
symlink counts itself and is never followed, and a walk never leaves the
file system it starts on. Three numbers are not walked: dpkg's
Installed-Size (the package's own estimate, in KiB, times 1024), the file
system's used space (statvfs) and the image file's size (its st_size, the
manifest's image.size_bytes). The functions read nothing but the folder they
are given, so they run on a fake tree too.
"""
import os
from pathlib import Path

from ..contract.paths import InImagePaths
from .contents import dpkg_installed_sizes

TOP_PACKAGES = 25
TOP_AGENT = 15


def disk_usage(path: Path) -> int:
    """Bytes used on disk by path and everything under it (0 if missing)."""
    try:
        top = os.lstat(path)
    except OSError:
        return 0
    total = top.st_blocks * 512
    seen: set[tuple[int, int]] = set()
    pending = [path] if os.path.isdir(path) and not os.path.islink(path) else []
    while pending:
        try:
            entries = list(os.scandir(pending.pop()))
        except OSError:
            continue
        for entry in entries:
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            if st.st_dev != top.st_dev:     # a mount point: another file system
                continue
            if st.st_nlink > 1 and not entry.is_dir(follow_symlinks=False):
                if (st.st_dev, st.st_ino) in seen:
                    continue
                seen.add((st.st_dev, st.st_ino))
            total += st.st_blocks * 512
            if entry.is_dir(follow_symlinks=False):
                pending.append(entry.path)
    return total


def _top(sizes: dict[str, int], n: int) -> list[dict]:
    """The n biggest, biggest first (ties by name)."""
    ranked = sorted(sizes.items(), key=lambda kv: (-kv[1], kv[0]))[:n]
    return [{"name": name, "bytes": size} for name, size in ranked]


def packages(root: Path, top: int = TOP_PACKAGES) -> dict:
    """The installed OS packages by dpkg's Installed-Size."""
    sizes = dpkg_installed_sizes(root)
    return {"count": len(sizes), "total_bytes": sum(sizes.values()),
            "top": _top(sizes, top)}


def agent_venv(root: Path, venv: str, top: int = TOP_AGENT) -> dict | None:
    """The guest agent's virtualenv, and the biggest entries of its
    site-packages (a package's folder, a module, a .dist-info folder), or
    None when the image has no such folder."""
    path = root / venv.lstrip("/")
    if not path.is_dir() or path.is_symlink():
        return None
    entries: dict[str, int] = {}
    for site in sorted(path.glob("lib/python3*/site-packages")):
        for entry in site.iterdir():
            entries[entry.name] = entries.get(entry.name, 0) + disk_usage(entry)
    return {"path": venv, "total_bytes": disk_usage(path),
            "site_packages_bytes": sum(entries.values()), "top": _top(entries, top)}


def preloaded_images(root: Path, folder: str) -> dict | None:
    """Each file in the folder of preloaded container images (the archives
    and their images.list), biggest first; total_bytes is their sum. None
    when the image has no such folder."""
    path = root / folder.lstrip("/")
    if not path.is_dir() or path.is_symlink():
        return None
    files = {str(f.relative_to(path)): disk_usage(f) for f in path.rglob("*")
             if f.is_file() and not f.is_symlink()}
    return {"path": folder, "total_bytes": sum(files.values()),
            "files": _top(files, len(files))}


def _modules_dirs(root: Path) -> list[Path]:
    """/usr/lib/modules, and /lib/modules where /lib is not a link to /usr/lib."""
    found = [root / "usr/lib/modules"]
    if not (root / "lib").is_symlink() and not (root / "lib/modules").is_symlink():
        found.append(root / "lib/modules")
    return [d for d in found if d.is_dir()]


def kernel(root: Path) -> dict:
    """The kernels: /boot/vmlinuz-* and /boot/initrd.img-*, and each
    version's modules folder; total_bytes is their sum."""
    files: dict[str, int] = {}
    for pattern in ("vmlinuz-*", "initrd.img-*"):
        for f in (root / "boot").glob(pattern):
            if f.is_file() and not f.is_symlink():
                files[str(f.relative_to(root))] = disk_usage(f)
    for modules in _modules_dirs(root):
        for version in modules.iterdir():
            if version.is_dir() and not version.is_symlink():
                files[str(version.relative_to(root))] = disk_usage(version)
    return {"total_bytes": sum(files.values()), "files": _top(files, len(files))}


def filesystem(root: Path) -> dict:
    """The root file system: what its files use (a walk), what statvfs
    says is used (with the journal and metadata) and its size."""
    st = os.statvfs(root)
    return {"files_bytes": disk_usage(root),
            "used_bytes": (st.f_blocks - st.f_bfree) * st.f_frsize,
            "size_bytes": st.f_blocks * st.f_frsize}


def image_sizes(root: Path, paths: InImagePaths, image_bytes: int | None = None) -> dict:
    """The manifest's sizes section; image_bytes: the image file's own size."""
    return {"image_bytes": image_bytes,
            "filesystem": filesystem(root),
            "kernel": kernel(root),
            "agent_venv": agent_venv(root, paths.agent_venv),
            "preloaded_images": preloaded_images(root, paths.images),
            "packages": packages(root)}
