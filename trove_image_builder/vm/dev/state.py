"""The state folder of the development VM, and the processes it names.

Layout (every path inside the one folder; ``dev down`` removes it)::

    state.json        what runs: the pids, the ports, the guest's identity
    id_ed25519[.pub]  the key the VM was given on its config drive
    overlay.qcow2     the VM's disk, over the image (never written)
    volume.raw        the data volume, /dev/vdb in the guest
    config-drive.iso  what Trove injects (guest_info.conf, the agent's config)
    console.log       the serial console; qemu.argv, qemu.err
    broker/           RabbitMQ's home (mnesia, logs, server.out)
    conductor.log     the background conductor's output
    heartbeats.jsonl  what the conductor heard, one JSON object a line
    sync.json         what the last 'dev sync' sent (to send only changes)
    lock              held by the command at work on the VM (locked())
    qmp.sock          qemu's monitor, for 'dev up --snapshot' and a resume
    snapshot/         the VM saved by 'dev up --snapshot' (dev.snapshot)
"""
import contextlib
from dataclasses import asdict, dataclass, field, fields
import fcntl
import json
import os
from pathlib import Path
import time

from ...errors import InputError, VerifyError
from ..boot import Guest

STATE_FILE = "state.json"
HEARTBEATS = "heartbeats.jsonl"
SYNC_FILE = "sync.json"
LOCK_FILE = "lock"


@dataclass
class DevState:
    """What state.json holds."""
    folder: Path
    image: str
    user: str
    guest_id: str
    rpc_key: str | None
    tenant_id: str
    manager: str | None
    datastore_version: str | None
    agent_unit: str
    agent_venv: str
    agent_state: str | None
    agent_log: str
    accel: str
    memory_mb: int
    ssh_port: int = 0
    forwarded: dict = field(default_factory=dict)   # guest port -> port on 127.0.0.1
    qemu_pid: int | None = None
    broker: dict | None = None                      # LocalRabbit.record()
    conductor_pid: int | None = None
    trove_src: str | None = None
    preparable: bool = False
    started_at: float = field(default_factory=time.time)
    boot_seconds: float | None = None

    @property
    def broker_url(self) -> str:
        return f"rabbit://guest:guest@127.0.0.1:{self.broker['port']}/"

    @property
    def key(self) -> Path:
        return self.folder / "id_ed25519"

    def guest(self) -> Guest:
        """The Guest to reach over ssh (no process of ours: qemu is detached)."""
        return Guest(self.ssh_port, self.user, self.key, self.folder / "console.log",
                     self.folder, self.guest_id, self.accel, memory_mb=self.memory_mb,
                     forwarded=dict(self.forwarded))

    def save(self) -> None:
        data = asdict(self)
        data["folder"] = str(self.folder)
        data["forwarded"] = {str(k): v for k, v in self.forwarded.items()}
        path = self.folder / STATE_FILE
        partial = path.with_name(path.name + ".partial")
        partial.write_text(json.dumps(data, indent=2) + "\n")
        os.chmod(partial, 0o600)        # it holds the guest's RPC key
        partial.replace(path)


def load(folder: Path) -> DevState:
    """The state in folder; InputError, one line, when no VM is up there."""
    path = Path(folder) / STATE_FILE
    if not path.is_file():
        raise InputError(f"no development VM is up ({path} not found); start one with "
                         "'trove-image-builder dev up'")
    try:
        data = json.loads(path.read_text())
        data["folder"] = Path(folder)
        data["forwarded"] = {int(k): v for k, v in data.get("forwarded", {}).items()}
        known = {f.name for f in fields(DevState)}
        return DevState(**{k: v for k, v in data.items() if k in known})
    except (ValueError, TypeError) as exc:
        raise InputError(f"{path}: not a state file of 'dev up' ({exc}); remove the "
                         "folder or run 'trove-image-builder dev down'") from exc


# --------------------------------------------------------------------------
# One command at work at a time

@contextlib.contextmanager
def locked(folder: Path, command: str, create: bool = False):
    """Hold the state folder's lock while command ('up', 'sync', ...) runs;
    InputError, one line naming the holder, if another command holds it.

    A second command fails at once rather than waiting: every command that
    takes the lock runs for seconds to minutes and changes the VM (a boot,
    an install, an agent restart, a prepare, a wipe), and one queued behind
    another would act on a VM in a state its user never saw (a sync landing
    in the middle of a reset, a prepare after a reset that was typed later).
    Saying which command holds the VM, and its pid, lets the developer
    choose: wait for it, or stop it. The lock is an flock(2): it goes with
    its holder, so a command that was killed leaves no stale lock; and the
    file is not inherited by the detached processes 'up' starts (Python
    opens it close-on-exec), so they never hold it.

    create: make the folder first ('up'); otherwise a folder that does not
    exist has nothing to guard, and the command says so itself. A folder
    made here that holds nothing but the lock afterwards is removed."""
    folder = Path(folder)
    if not folder.is_dir():
        if not create:
            yield
            return
        folder.mkdir(parents=True)
        made = True
    else:
        made = False
    path = folder / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise InputError(f"{_holder(fd)} is at work on the development VM in {folder}; "
                             "wait for it to end, or stop it") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps({"pid": os.getpid(), "command": command,
                                  "since": round(time.time(), 1)}).encode(), 0)
        try:
            yield
        finally:
            if made and folder.is_dir() and \
                    [p.name for p in folder.iterdir()] == [LOCK_FILE]:
                path.unlink(missing_ok=True)
                with contextlib.suppress(OSError):
                    folder.rmdir()
    finally:
        os.close(fd)


def _holder(fd: int) -> str:
    """"another 'dev sync' (pid 12, for 40 s)", from what the holder wrote."""
    try:
        found = json.loads(os.pread(fd, 4096, 0) or b"{}")
        return (f"another 'dev {found['command']}' (pid {found['pid']}, for "
                f"{max(0, round(time.time() - found['since']))} s)")
    except (ValueError, KeyError, TypeError):
        return "another 'dev' command"     # it has not written its name yet


# --------------------------------------------------------------------------
# The processes it names

def alive(pid: int | None, marker: str | None = None) -> bool:
    """pid runs (not a zombie) and, given a marker, is ours: its command
    line or its environment names the marker (a pid may have been reused)."""
    if not pid:
        return False
    try:
        head, _, tail = Path(f"/proc/{pid}/stat").read_text().rpartition(")")
    except OSError:
        return False
    if tail.split()[:1] in (["Z"], ["X"]):
        return False
    if marker is None:
        return True
    for name in ("cmdline", "environ"):
        try:
            if marker.encode() in Path(f"/proc/{pid}/{name}").read_bytes():
                return True
        except OSError:
            pass
    return False


def qemu_running(state: DevState) -> bool:
    return alive(state.qemu_pid, str(state.folder / "overlay.qcow2"))


def require_running(state: DevState) -> DevState:
    """state, if its VM still runs; else VerifyError with the console's tail."""
    if not qemu_running(state):
        tail = state.guest().console_tail(15)
        err = (state.folder / "qemu.err")
        said = err.read_text(errors="replace").strip() if err.is_file() else ""
        raise VerifyError(f"the development VM (qemu pid {state.qemu_pid}) is not running "
                          f"any more; 'trove-image-builder dev down' clears its state"
                          + (f"; qemu said: {said.splitlines()[-1]}" if said else "")
                          + (f"\nconsole:\n{tail}" if tail else ""))
    return state


def running(folder: Path) -> DevState:
    """The state of the VM up in folder; InputError if none, VerifyError if it died."""
    return require_running(load(folder))


# --------------------------------------------------------------------------
# What the conductor heard

def record_heard(folder: Path, entry: dict) -> None:
    """Append one thing heard (a heartbeat, a notice, a reset) to the journal."""
    entry = {"heard_at": round(time.time(), 3), **entry}
    with open(Path(folder) / HEARTBEATS, "a") as fh:
        fh.write(json.dumps(entry, default=str) + "\n")


def heard(folder: Path) -> list[dict]:
    path = Path(folder) / HEARTBEATS
    if not path.is_file():
        return []
    found = []
    for line in path.read_text().splitlines():
        try:
            found.append(json.loads(line))
        except ValueError:
            continue        # a line being written
    return found


def last_heartbeat(folder: Path, now: float | None = None) -> dict | None:
    """The last heartbeat since the last reset: its status and age, and how
    many were heard; None if none."""
    entries = heard(folder)
    resets = [i for i, e in enumerate(entries) if e.get("kind") == "reset"]
    since = entries[resets[-1] + 1:] if resets else entries
    beats = [e for e in since if e.get("kind") == "status"]
    if not beats:
        return None
    # the conductor's threads may write two heartbeats out of order: the
    # guest's own timestamps say which is the last
    last = max(beats, key=lambda e: (e.get("sent") or e["heard_at"], e["heard_at"]))
    now = time.time() if now is None else now
    return {"status": last.get("status"), "seconds_ago": round(now - last["heard_at"], 1),
            "heard": len(beats)}
