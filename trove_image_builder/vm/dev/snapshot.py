"""Save the development VM once, and resume it later instead of booting.

``dev up --snapshot`` saves the VM right after the agent first answers:
qemu is paused, its state is migrated into a file (QMP ``migrate`` to
``exec:cat``), the overlay and the volume are copied while it stays paused
(so the three agree), and it runs on. ``dev down --keep-snapshot`` keeps
that folder; the next ``dev up`` copies the disks back and starts qemu with
``-incoming`` on the state file, with the same devices and a new broker,
conductor and ports. The guest then carries on from where it was saved:
booted, the agent's code the image's, never prepared.

What the guest does not know: its broker is a new one (user networking's
guest forward now reaches the new broker's port; the agent's AMQP
connections to the old one are dead, and are closed in the guest so that
oslo.messaging reconnects at once instead of at its next heartbeat), and
the time passed since the save (its clock is set from its RTC, which
follows the host's).

    snapshot/state.json      the DevState of the saved VM (its guest's
                             identity and key), and the image it runs on
    snapshot/vm.state        qemu's migration stream
    snapshot/overlay.qcow2, volume.raw, config-drive.iso, id_ed25519[.pub]
"""
import contextlib
from dataclasses import fields
import json
import os
from pathlib import Path
import shlex
import shutil
import socket
import time

from ...errors import InputError, VerifyError
from ...plumbing import log
from ...plumbing.runner import run
from .state import DevState

FOLDER = "snapshot"
QMP_SOCKET = "qmp.sock"
DISKS = ("overlay.qcow2", "volume.raw")
FILES = ("config-drive.iso", "id_ed25519", "id_ed25519.pub")
SAVE_TIMEOUT = 600
# the fields of DevState that name this run's processes and ports, not the guest
RUN_FIELDS = ("ssh_port", "forwarded", "qemu_pid", "broker", "conductor_pid",
              "started_at", "boot_seconds")


# --------------------------------------------------------------------------
# qemu's monitor

def qmp_argv(folder: Path) -> list:
    path = Path(folder) / QMP_SOCKET
    if len(str(path).encode()) >= 108:      # sun_path
        raise InputError(f"{path}: too long a path for qemu's monitor socket; use a "
                         "shorter 'dev --state' folder to save the VM")
    return ["-qmp", f"unix:{path},server=on,wait=off"]


class Monitor:
    """A QMP connection: execute() returns the answer, raises on an error."""

    def __init__(self, path: Path, timeout: float = 60):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(str(path))
        self.reader = self.sock.makefile("r")
        self._read()                                    # the greeting
        self.execute("qmp_capabilities")

    def _read(self) -> dict:
        while True:
            line = self.reader.readline()
            if not line:
                raise VerifyError("qemu's monitor closed the connection")
            message = json.loads(line)
            if "event" not in message:
                return message

    def execute(self, command: str, **arguments):
        request = {"execute": command}
        if arguments:
            request["arguments"] = arguments
        self.sock.sendall(json.dumps(request).encode() + b"\n")
        answer = self._read()
        if "error" in answer:
            raise VerifyError(f"qemu's monitor refused {command}: "
                              f"{answer['error'].get('desc', answer['error'])}")
        return answer.get("return")

    def close(self):
        self.reader.close()
        self.sock.close()


@contextlib.contextmanager
def monitor(folder: Path):
    mon = Monitor(Path(folder) / QMP_SOCKET)
    try:
        yield mon
    finally:
        mon.close()


# --------------------------------------------------------------------------
# save

def copy_file(source: Path, dest: Path) -> None:
    """A copy that keeps holes (and shares blocks where the file system can)."""
    run(["cp", "--sparse=always", "--reflink=auto", str(source), str(dest)])


def _image_id(image: Path) -> dict:
    stat = Path(image).stat()
    return {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def save(st: DevState) -> dict:
    """Pause st's VM, write its state and copies of its disks into the
    snapshot folder, let it run on; the seconds it was paused and the
    snapshot's size."""
    folder = st.folder / FOLDER
    partial = st.folder / (FOLDER + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir()
    seconds = {}
    try:
        with log.step(f"save the VM into {folder}", seconds, "paused"), \
                monitor(st.folder) as mon:
            mon.execute("stop")
            try:
                # a paused guest: no need to hold the copy back
                mon.execute("migrate-set-parameters", **{"max-bandwidth": 1 << 40})
                target = shlex.quote(str(partial / "vm.state"))
                mon.execute("migrate", uri=f"exec:cat > {target}")
                _wait_for_migration(mon)
                for name in DISKS:
                    copy_file(st.folder / name, partial / name)
            finally:
                mon.execute("cont")
        for name in FILES:
            shutil.copy2(st.folder / name, partial / name)
        record = {k: v for k, v in json.loads((st.folder / "state.json").read_text()).items()
                  if k not in RUN_FIELDS}
        record["image_id"] = _image_id(Path(st.image))
        (partial / "state.json").write_text(json.dumps(record, indent=2) + "\n")
        os.chmod(partial / "state.json", 0o600)
        shutil.rmtree(folder, ignore_errors=True)
        partial.rename(folder)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    size = sum(p.stat().st_blocks * 512 for p in folder.iterdir())
    log.info(f"saved: {size / 2 ** 20:.0f} MiB on disk")
    return {"seconds": seconds["paused"], "bytes": size}


def _wait_for_migration(mon: Monitor) -> None:
    deadline = time.monotonic() + SAVE_TIMEOUT
    while time.monotonic() < deadline:
        found = mon.execute("query-migrate")
        status = found.get("status")
        if status == "completed":
            return
        if status in ("failed", "cancelled"):
            raise VerifyError(f"saving the VM failed: {found.get('error-desc', status)}")
        time.sleep(0.2)
    mon.execute("migrate_cancel")
    raise VerifyError(f"saving the VM took more than {SAVE_TIMEOUT} s")


# --------------------------------------------------------------------------
# resume

def saved(folder: Path) -> dict | None:
    """The record of the snapshot kept in folder, None if there is none."""
    path = Path(folder) / FOLDER / "state.json"
    try:
        return json.loads(path.read_text()) if path.is_file() else None
    except ValueError:
        return None


def usable(record: dict, image: Path | None, accel: str) -> str | None:
    """Why the snapshot cannot be resumed to run image (None: it can)."""
    if image is not None and Path(image).resolve() != Path(record["image"]):
        return f"it runs {record['image']}, not {Path(image).resolve()}"
    try:
        if _image_id(Path(record["image"])) != record.get("image_id"):
            return f"{record['image']} changed since it was saved"
    except OSError:
        return f"{record['image']} is gone"
    if accel != record.get("accel"):
        return f"it was saved under {record.get('accel')}, qemu runs {accel} now"
    return None


def restore(folder: Path) -> DevState:
    """Copy the snapshot's disks and files into folder; the DevState of the
    saved guest (no process yet)."""
    snap = Path(folder) / FOLDER
    for name in DISKS:
        copy_file(snap / name, Path(folder) / name)
    for name in FILES:
        shutil.copy2(snap / name, Path(folder) / name)
    known = {f.name for f in fields(DevState)}
    record = {k: v for k, v in saved(folder).items() if k in known}
    record["folder"] = Path(folder)
    return DevState(**record)


def incoming_argv(folder: Path) -> list:
    """qemu's options to load the saved state (and its monitor, to start it)."""
    return [*qmp_argv(folder), "-incoming",
            f"exec:cat {shlex.quote(str(Path(folder) / FOLDER / 'vm.state'))}"]


def run_when_loaded(folder: Path, proc, timeout: float = SAVE_TIMEOUT) -> None:
    """Wait until qemu (proc) has loaded the saved state, then let the VM
    run: it was saved paused, and comes back paused."""
    path = Path(folder) / QMP_SOCKET
    deadline = time.monotonic() + timeout
    while not path.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise VerifyError(f"qemu did not start to load the saved VM (exit "
                              f"{proc.poll()}): {_said(folder)}")
        time.sleep(0.1)
    with monitor(folder) as mon:
        while (status := mon.execute("query-status")["status"]) == "inmigrate":
            if time.monotonic() > deadline:
                raise VerifyError(f"qemu did not load the saved VM within {timeout:.0f} s")
            time.sleep(0.2)
        if status != "running":
            mon.execute("cont")
        if mon.execute("query-status")["status"] != "running":
            raise VerifyError(f"the saved VM does not run after loading ({status}): "
                              f"{_said(folder)}")


def _said(folder: Path) -> str:
    err = Path(folder) / "qemu.err"
    lines = err.read_text(errors="replace").strip().splitlines() if err.is_file() else []
    return lines[-1] if lines else "no message"


def after_resume_commands(st: DevState, now: float) -> str:
    """What the resumed guest runs at once: its clock set from its RTC
    (qemu's RTC follows the host's clock, across the save too; now, the
    host's time, if it has none), and its TCP connections to the old broker
    closed (they are dead: the broker and user networking's connections are
    new), so that the agent's AMQP client reconnects now rather than at its
    next heartbeat."""
    from ..boot import GUEST_FORWARD_IP
    rtc = "/sys/class/rtc/rtc0/since_epoch"
    return (f"sudo date -u -s @$(cat {rtc} 2>/dev/null || echo {now:.0f}) >/dev/null; "
            f"sudo ss -K dst {GUEST_FORWARD_IP} dport = 5672 >/dev/null || true")
