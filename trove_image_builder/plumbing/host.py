"""Check the build host before the work: tools, root, loop devices, the
partition route (device-mapper or the partx stand-ins) and the accelerator
qemu and libguestfs can use (KVM, or TCG when KVM is missing or broken).
"""
from dataclasses import dataclass
import functools
import json
import os
from pathlib import Path
import shutil
import subprocess
import sys
import time

from ..errors import HostError

SHIMS_DIR = Path(__file__).resolve().parent / "hostshims"


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str
    fix: str = ""
    needed_for: str = "build"


def tool_path() -> str:
    """PATH for child processes: this environment's bin first, so that the
    diskimage-builder installed beside us is found even when not activated."""
    here = str(Path(sys.executable).parent)
    rest = os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
    parts = [here] + [p for p in rest.split(":") if p and p != here]
    for sbin in ("/usr/sbin", "/sbin"):
        if sbin not in parts:
            parts.append(sbin)
    return ":".join(parts)


def which(tool: str) -> str | None:
    return shutil.which(tool, path=tool_path())


def device_mapper_in_kernel() -> bool:
    """The kernel has device-mapper (a /dev/mapper/control node alone proves
    nothing: a package's postinst in a build chroot can make one)."""
    try:
        return "device-mapper" in Path("/proc/misc").read_text()
    except OSError:
        return False


def device_mapper_usable() -> bool:
    return (device_mapper_in_kernel() and which("kpartx") is not None
            and which("dmsetup") is not None)


def partition_route() -> str:
    """'device-mapper' (kpartx as DIB expects) or 'partx' (our stand-ins)."""
    return "device-mapper" if device_mapper_usable() else "partx"


def shim_dir_needed() -> bool:
    """The stand-ins go first on DIB's PATH without device-mapper, or when
    there is no sudo at all (we build as root)."""
    return partition_route() == "partx" or which("sudo") is None


#: where the answer of the KVM probe is kept until the host reboots (/run is
#: a tmpfs): the probe costs up to KERNEL_PROBE_SECONDS on a host where KVM
#: hangs, and every build and boot asks
RUN_DIR = Path(os.environ.get("TROVE_IMAGE_BUILDER_RUN_DIR", "/run/trove-image-builder"))


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


@functools.lru_cache(maxsize=1)
def kvm_status() -> tuple[bool, str]:
    """Whether qemu can really run a KVM guest here, and why not; probed
    once per host boot (and per qemu binary and kernel)."""
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return False, "/dev/kvm is missing or not accessible"
    qemu = which("qemu-system-x86_64")
    if qemu is None:
        return False, "qemu-system-x86_64 is not installed"
    kernel = _probe_kernel()
    if kernel is None:
        return _vcpu_starts(qemu)
    key = {"boot_id": _boot_id(), "qemu": qemu, "qemu_mtime": os.stat(qemu).st_mtime,
           "kernel": str(kernel)}
    saved = RUN_DIR / "kvm.json"
    try:
        known = json.loads(saved.read_text())
        if known.get("key") == key and key["boot_id"]:
            return bool(known["ok"]), str(known["why"])
    except (OSError, ValueError, KeyError, AttributeError):
        pass
    ok, why = _kernel_under_kvm(qemu, kernel)
    try:
        RUN_DIR.mkdir(parents=True, exist_ok=True)
        tmp = saved.with_name(f".kvm.{os.getpid()}.json")
        tmp.write_text(json.dumps({"key": key, "ok": ok, "why": why}))
        os.replace(tmp, saved)
    except OSError:
        pass                # not writable: probe again next time
    return ok, why


def _vcpu_starts(qemu: str) -> tuple[bool, str]:
    """Without a kernel to boot: does a KVM vCPU start at all."""
    proc = subprocess.Popen(
        [qemu, "-accel", "kvm", "-cpu", "host", "-display", "none", "-nodefaults",
         "-no-reboot", "-S", "-monitor", "none", "-serial", "none"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 4
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            err = (proc.stderr.read() or "").strip().splitlines()
            return False, "KVM is present but unusable: " + (err[0] if err else
                                                             f"qemu exited {proc.returncode}")
        time.sleep(0.2)
    proc.kill()
    proc.wait()
    return True, "KVM vCPU started"


# A vCPU that starts proves little: where nested KVM is broken the firmware
# may run while a Linux kernel hangs before its first line. So when the host
# has a kernel in /boot, it is booted under KVM without a root file system:
# where KVM works it panics ('VFS: Unable to mount root fs') within a second
# or two; where it does not, qemu aborts (an MSR it cannot set) or the
# kernel prints nothing.
KERNEL_PROBE_SECONDS = 8


def _probe_kernel() -> Path | None:
    kernels = sorted(Path("/boot").glob("vmlinuz-*"))
    usable = [k for k in kernels if os.access(k, os.R_OK)]
    return usable[-1] if usable else None


def _kernel_under_kvm(qemu: str, kernel: Path) -> tuple[bool, str]:
    import tempfile
    with tempfile.TemporaryDirectory(prefix="tib-kvm-") as folder:
        console, err = Path(folder) / "console", Path(folder) / "err"
        console.touch()
        with open(err, "w") as err_file:
            proc = subprocess.Popen(
                [qemu, "-accel", "kvm", "-cpu", "host", "-m", "256", "-display", "none",
                 "-nodefaults", "-no-reboot", "-monitor", "none", "-serial",
                 f"file:{console}", "-kernel", str(kernel),
                 "-append", "console=ttyS0 panic=-1 loglevel=4"],
                stdout=subprocess.DEVNULL, stderr=err_file)
        deadline = time.monotonic() + KERNEL_PROBE_SECONDS
        try:
            while time.monotonic() < deadline:
                if b"Kernel panic" in console.read_bytes():
                    return True, f"a Linux kernel ran under KVM ({kernel.name})"
                if proc.poll() is not None:
                    said = err.read_text(errors="replace").strip().splitlines()
                    return False, "KVM is present but unusable: " + (
                        said[0] if said else f"qemu exited {proc.returncode}")
                time.sleep(0.1)
        finally:
            proc.kill()
            proc.wait()
    return False, ("KVM is present but unusable: a Linux kernel makes no progress under "
                   f"it ({kernel.name} printed nothing within {KERNEL_PROBE_SECONDS} s)")


def accelerator() -> str:
    return "kvm" if kvm_status()[0] else "tcg"


def libguestfs_env() -> dict:
    """Environment for libguestfs: force TCG when KVM cannot be used."""
    return {} if accelerator() == "kvm" else {"LIBGUESTFS_BACKEND_SETTINGS": "force_tcg"}


def _tool(name: str, needed_for: str, package: str) -> Check:
    path = which(name)
    return Check(f"tool {name}", path is not None, path or "not found",
                 "" if path else f"install '{package}' (scripts/install does)", needed_for)


def checks(backend_tools=()) -> list[Check]:
    out = []
    root = os.geteuid() == 0
    out.append(Check("root", root, "running as root" if root else "not root",
                     "" if root else "run as root: DIB mounts and loop devices need it"))
    loop = Path("/dev/loop-control").exists()
    out.append(Check("loop devices", loop, "/dev/loop-control present" if loop else
                     "/dev/loop-control missing", "" if loop else "load the 'loop' module"))
    for name, package, needed in backend_tools:
        out.append(_tool(name, needed, package))
    route = partition_route()
    out.append(Check(
        "partition route", True,
        "device-mapper (kpartx)" if route == "device-mapper" else
        "partx stand-ins for kpartx/dmsetup: no device-mapper on this host "
        "(only on the build's own PATH; the host is not changed)"))
    kvm, why = kvm_status()
    out.append(Check("accelerator", True,
                     "kvm" if kvm else f"tcg (software emulation; {why})",
                     needed_for="boot, libguestfs"))
    return out


def require(found: list[Check], needed_for: str) -> None:
    """Raise HostError naming every failed check that the work needs."""
    missing = [c for c in found if not c.ok and needed_for in c.needed_for]
    if missing:
        lines = "; ".join(f"{c.name}: {c.detail} ({c.fix})" for c in missing)
        raise HostError(f"this host cannot {needed_for}: {lines}")


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (for a forward or a service
    of our own)."""
    import socket
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
