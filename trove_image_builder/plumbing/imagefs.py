"""Mount a disk image's root file system read-only, with no boot and no
device-mapper or nbd: qemu-storage-daemon exports a qcow2 as a raw file over
FUSE (read-only), and the root partition is loop-mounted from it."""
import contextlib
import json
from pathlib import Path
import shutil
import subprocess
import tempfile
import time

from . import host
from ..errors import BuildError, InputError
from .runner import run, stop


def convert_argv(source: Path, dest: Path, fmt: str, compression: str) -> list[str]:
    """qemu-img convert of source into one standalone image (a backing
    chain flattened), compressed as the profile asks for a qcow2."""
    compressed = fmt == "qcow2" and compression != "none"
    argv = ["qemu-img", "convert", *(["-c"] if compressed else []), "-O", fmt]
    if compressed and compression == "zstd":
        argv += ["-o", "compression_type=zstd"]
    return [*argv, str(source), str(dest)]


def image_info(image: Path) -> dict:
    proc = run(["qemu-img", "info", "--output=json", "-U", str(image)])
    return json.loads(proc.stdout)


@contextlib.contextmanager
def _raw_view(image: Path, fmt: str, tmp: Path, writable: bool = False):
    if fmt == "raw":
        yield image
        return
    raw = tmp / "disk.raw"
    raw.touch()
    ro, rw = ("off", "on") if writable else ("on", "off")
    qsd = host.which("qemu-storage-daemon")
    if qsd is None:
        raise BuildError("qemu-storage-daemon not found; install 'qemu-system-common' "
                         "(scripts/install does)")
    proc = subprocess.Popen(
        [qsd,
         "--blockdev", f"driver=file,node-name=file,filename={image},read-only={ro}",
         "--blockdev", f"driver={fmt},node-name=disk,file=file,read-only={ro}",
         "--export", f"type=fuse,id=exp,node-name=disk,mountpoint={raw},writable={rw}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while raw.stat().st_size == 0:
            if proc.poll() is not None:
                raise BuildError(f"qemu-storage-daemon could not export {image}: "
                                 f"{proc.stderr.read().strip()}")
            if time.monotonic() > deadline:
                raise BuildError(f"qemu-storage-daemon did not export {image} in 30 s")
            time.sleep(0.05)
        yield raw
    finally:
        stop(proc, timeout=10)
        try:
            left = raw.is_mount()
        except OSError:     # the daemon died: its mount is there, disconnected
            left = True
        if left:
            subprocess.run(["umount", "-l", str(raw)], capture_output=True)


def partitions(raw: Path) -> list[dict]:
    """Partitions as [{'start': bytes, 'size': bytes, 'type': str}], or
    one covering the whole file when there is no partition table."""
    proc = run(["sfdisk", "--json", str(raw)], check=False)
    if proc.returncode != 0:
        return [{"start": 0, "size": raw.stat().st_size, "type": "none"}]
    table = json.loads(proc.stdout)["partitiontable"]
    sector = table.get("sectorsize", 512)
    return [{"start": p["start"] * sector, "size": p["size"] * sector,
             "type": str(p.get("type", ""))} for p in table.get("partitions", [])]


@contextlib.contextmanager
def mounted(image: Path, writable: bool = False):
    """Yield the image's root file system, mounted read-only (or, for
    editing a copy, read-write)."""
    image = Path(image).resolve()
    if not image.is_file():
        raise InputError(f"{image}: no such image file")
    fmt = image_info(image)["format"]
    tmp = Path(tempfile.mkdtemp(prefix="tib-mount-"))
    mnt = tmp / "root"
    mnt.mkdir()
    loop = None
    try:
        with _raw_view(image, fmt, tmp, writable) as raw:
            try:
                for part in sorted(partitions(raw), key=lambda p: -p["size"]):
                    loop = run(["losetup", "--find", "--show",
                                *(() if writable else ("--read-only",)),
                                "--offset", str(part["start"]),
                                "--sizelimit", str(part["size"]), str(raw)]).stdout.strip()
                    opts = "rw" if writable else "ro,noload"
                    ok = run(["mount", "-o", opts, loop, str(mnt)],
                             check=False).returncode == 0
                    if not ok:
                        ok = run(["mount", "-o", "ro", loop, str(mnt)],
                                 check=False).returncode == 0
                    if ok and (mnt / "etc").is_dir():
                        break
                    if ok:
                        run(["umount", str(mnt)], check=False)
                    run(["losetup", "-d", loop], check=False)
                    loop = None
                else:
                    raise BuildError(f"{image}: no partition holds a root file system")
                yield mnt
            finally:
                if loop is not None:
                    if run(["umount", str(mnt)], check=False).returncode != 0:
                        # still busy (a process that outlived an interrupt):
                        # detach now, the kernel finishes when it lets go
                        run(["umount", "-l", str(mnt)], check=False)
                    run(["losetup", "-d", loop], check=False)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
