"""Leave nothing behind: mounts and loop devices under a work folder."""
import contextlib
import json
import os
from pathlib import Path
import signal
import subprocess


def _mounts_under(folder: Path) -> list[str]:
    prefix = str(folder.resolve()).rstrip("/") + "/"
    targets = []
    with open("/proc/self/mountinfo", encoding="utf-8") as fh:
        for line in fh:
            target = line.split()[4].replace("\\040", " ")
            if (target + "/").startswith(prefix):
                targets.append(target)
    # deepest first
    return sorted(set(targets), key=lambda t: t.count("/"), reverse=True)


def loops_backed_by(folder: Path) -> list[str]:
    """Loop devices whose backing file lies under folder."""
    prefix = str(folder.resolve()).rstrip("/") + "/"
    try:
        out = subprocess.run(["losetup", "--json", "--list"], capture_output=True,
                             text=True, check=False).stdout
        devices = json.loads(out or '{"loopdevices": []}')["loopdevices"]
    except (OSError, ValueError, KeyError):
        return []
    return [d["name"] for d in devices
            if (d.get("back-file") or "").split(" (deleted)")[0].startswith(prefix)]


def release_workdir(folder: Path) -> list[str]:
    """Unmount and detach what a build left under folder; say what was done."""
    done = []
    if not folder.exists():
        return done
    for target in _mounts_under(folder):
        if subprocess.run(["umount", target], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", target], capture_output=True)
        done.append(f"umount {target}")
    for dev in loops_backed_by(folder):
        base = os.path.basename(dev)
        mapper = Path("/dev/mapper")
        if mapper.is_dir():
            for node in mapper.glob(f"{base}p*"):
                node.unlink(missing_ok=True)
        subprocess.run(["partx", "-d", dev], capture_output=True)
        subprocess.run(["losetup", "-d", dev], capture_output=True)
        done.append(f"losetup -d {dev}")
    return done


def forget_dev_mapper() -> None:
    """Remove a /dev/mapper that a build made on a host without
    device-mapper (the partx stand-ins' nodes, and the control node that a
    package's postinst in the build chroot creates in the shared /dev)."""
    from .host import device_mapper_in_kernel
    mapper = Path("/dev/mapper")
    if device_mapper_in_kernel() or not mapper.is_dir():
        return
    for node in mapper.iterdir():
        node.unlink(missing_ok=True)
    try:
        mapper.rmdir()
    except OSError:
        pass


@contextlib.contextmanager
def terminate_as_interrupt():
    """SIGTERM behaves like Ctrl-C, so that the same cleanup runs."""
    def handler(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")
    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
