"""Boot an image in qemu as Nova would, on a throwaway overlay.

The image file is never written: qemu runs a qcow2 overlay on top of it.
User-mode networking is restricted to the guest (``restrict=on``): the only
ways in and out are ssh forwarded to 127.0.0.1 and, when asked, guest
forwards to services on the host's loopback (a RabbitMQ for the contract
test), and host forwards from 127.0.0.1 to the guest's datastore ports (for
the prepare test's queries). A config drive carries what Nova and Trove
inject at boot: an ssh key for the guest user and Trove's files under
/etc/trove/conf.d. A scratch disk is attached as /dev/vdb, the volume Trove
would attach.
"""
import contextlib
from dataclasses import dataclass, field
import json
import logging
from pathlib import Path
import shutil
import subprocess
import tempfile
import time
import uuid

from ..plumbing import host, log
from ..errors import HostError, InputError, VerifyError
from ..contract import injected
from ..contract.injected import Injection
from ..plumbing.imagefs import image_info
from ..plumbing.host import free_port
from ..plumbing.runner import run, stop

GUEST_FORWARD_IP = "10.0.2.100"
# the guest's one network port (qemu's default address, named in network_data.json)
GUEST_MAC = "52:54:00:12:34:56"
BOOT_TIMEOUT = 900
# The VM's memory, the flavor's ram the prepare test tells the agent about:
# MariaDB and PostgreSQL in their containers fit with the agent and docker.
GUEST_MEMORY_MB = 2048


@dataclass
class Guest:
    """A booted image: how to reach it, and what it was given."""
    ssh_port: int
    user: str
    key: Path
    console: Path
    workdir: Path
    instance_id: str
    accel: str
    boot_seconds: float = 0.0
    powered_on: float = 0.0          # time.monotonic() when qemu started
    proc: subprocess.Popen | None = field(default=None, repr=False)
    forwarded: dict = field(default_factory=dict)   # guest port -> port on 127.0.0.1
    memory_mb: int = GUEST_MEMORY_MB

    @property
    def hostspec(self) -> str:
        return "paramiko://tib-guest"

    def ssh_config(self) -> Path:
        """An ssh_config naming the guest 'tib-guest' (for testinfra)."""
        path = self.workdir / "ssh_config"
        path.write_text("Host tib-guest\n"
                        "  HostName 127.0.0.1\n"
                        f"  Port {self.ssh_port}\n"
                        f"  User {self.user}\n"
                        f"  IdentityFile {self.key}\n"
                        "  StrictHostKeyChecking no\n"
                        "  UserKnownHostsFile /dev/null\n")
        return path

    def ssh_argv(self, *command: str) -> list:
        return ["ssh", "-i", str(self.key), "-p", str(self.ssh_port),
                "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
                "-o", "LogLevel=ERROR", f"{self.user}@127.0.0.1", *command]

    def ssh(self, command: str, timeout=300) -> subprocess.CompletedProcess:
        return subprocess.run(self.ssh_argv(command), capture_output=True, text=True,
                              timeout=timeout)

    def console_tail(self, lines=25) -> str:
        try:
            text = self.console.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(text[-lines:])


def config_drive(folder: Path, out: Path, instance_id: str, public_key: str,
                 files: dict) -> Path:
    """An OpenStack config drive (ISO 9660, label config-2), as Nova makes it."""
    root = folder / "config-drive"
    latest = root / "openstack" / "latest"
    content = root / "openstack" / "content"
    latest.mkdir(parents=True)
    content.mkdir(parents=True)
    entries = []
    for n, (path, text) in enumerate(sorted(files.items())):
        name = f"{n:04d}"
        (content / name).write_text(text)
        entries.append({"path": path, "content_path": f"/content/{name}"})
    meta = {"uuid": instance_id, "name": f"tib-{instance_id[:8]}",
            "hostname": f"tib-{instance_id[:8]}", "launch_index": 0,
            "availability_zone": "nova", "public_keys": {"verify": public_key},
            "files": entries}
    (latest / "meta_data.json").write_text(json.dumps(meta))
    (latest / "vendor_data.json").write_text("{}")
    (latest / "network_data.json").write_text(json.dumps(network_data()))
    tool = host.which("xorriso")
    if tool is None:
        raise HostError("xorriso not found; install 'xorriso' (scripts/install does)")
    run([tool, "-as", "mkisofs", "-quiet", "-o", str(out), "-V", "config-2",
         "-J", "-R", str(root)])
    return out


def network_data() -> dict:
    """The network as Nova's config drive describes it (network_data.json,
    nova/virt/netutils.py get_network_metadata): one port on an IPv4 network
    with DHCP, as qemu's user network is. Without it cloud-init falls back
    to DHCP on both IPv4 and IPv6 (cloud-init 25 on trixie), and ifupdown
    waits its five minutes for a DHCPv6 answer that never comes."""
    return {
        "links": [{"id": "tap-tib0", "type": "vif", "vif_id": "tib0",
                   "ethernet_mac_address": GUEST_MAC, "mtu": 1500}],
        "networks": [{"id": "network0", "type": "ipv4_dhcp", "link": "tap-tib0",
                      "network_id": "tib-network"}],
        "services": [],
    }


def qemu_argv(overlay: Path, volume: Path, drive: Path, ssh_port: int, console: Path,
              accel: str, guest_forwards=(), memory_mb=GUEST_MEMORY_MB, cpus=2,
              host_forwards=()) -> list:
    """host_forwards: (guest port, host port) pairs, from 127.0.0.1 only;
    guest_forwards: (port on GUEST_FORWARD_IP, port on the host's loopback)."""
    netdev = f"user,id=net0,restrict=on,hostfwd=tcp:127.0.0.1:{ssh_port}-:22"
    for guest_port, host_port in host_forwards:
        netdev += f",hostfwd=tcp:127.0.0.1:{host_port}-:{guest_port}"
    for guest_port, host_port in guest_forwards:
        socat = host.which("socat") or "socat"
        netdev += (f",guestfwd=tcp:{GUEST_FORWARD_IP}:{guest_port}"
                   f"-cmd:{socat} - TCP:127.0.0.1:{host_port}")
    argv = ["qemu-system-x86_64", "-accel", accel, "-m", str(memory_mb),
            "-smp", str(cpus), "-nodefaults", "-display", "none", "-no-reboot",
            "-serial", f"file:{console}",
            "-drive", f"file={overlay},if=virtio,format=qcow2",
            "-drive", f"file={volume},if=virtio,format=raw",
            "-drive", f"file={drive},if=virtio,format=raw,readonly=on",
            "-netdev", netdev, "-device", f"virtio-net-pci,netdev=net0,mac={GUEST_MAC}",
            "-device", "virtio-rng-pci"]
    argv += ["-cpu", "host"] if accel == "kvm" else ["-cpu", "max"]
    return argv


def _wait_for_ssh(guest: Guest, deadline: float) -> None:
    import paramiko
    # Refused and half-open connections are expected while the guest boots.
    logging.getLogger("paramiko").setLevel(logging.CRITICAL)
    last = "no answer"
    while time.monotonic() < deadline:
        if guest.proc.poll() is not None:
            raise VerifyError(f"qemu exited with code {guest.proc.returncode} while "
                              f"booting; console:\n{guest.console_tail()}")
        client = paramiko.SSHClient()
        client.set_missing_host_key_policy(paramiko.AutoAddPolicy())
        try:
            client.connect("127.0.0.1", port=guest.ssh_port, username=guest.user,
                           key_filename=str(guest.key), timeout=10, banner_timeout=30,
                           auth_timeout=30, allow_agent=False, look_for_keys=False)
            client.close()
            return
        except Exception as exc:  # noqa: BLE001 - any failure means not yet
            last = f"{type(exc).__name__}: {exc}"
            time.sleep(3)
        finally:
            client.close()
    raise VerifyError(f"no ssh login as {guest.user} within {BOOT_TIMEOUT} s ({last}); "
                      f"console:\n{guest.console_tail()}")


def _wait_for_cloud_init(guest: Guest, deadline: float) -> None:
    """Wait until cloud-init is done; ssh may drop once meanwhile (cloud-init
    makes the host keys and restarts sshd)."""
    last = ""
    while time.monotonic() < deadline:
        if guest.proc is not None and guest.proc.poll() is not None:
            raise VerifyError(f"qemu exited with code {guest.proc.returncode} while "
                              f"booting; console:\n{guest.console_tail()}")
        try:
            proc = guest.ssh("cloud-init status --wait",
                             timeout=max(30, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            break
        if proc.returncode != 255:      # 255: ssh itself failed
            return
        last = proc.stderr.strip()
        time.sleep(3)
    raise VerifyError(f"cloud-init did not finish within {BOOT_TIMEOUT} s ({last}); "
                      f"console:\n{guest.console_tail()}")


def check_tools(guest_forwards=()) -> None:
    """HostError naming the first tool a boot needs that is missing."""
    for tool in ("qemu-system-x86_64", "qemu-img", "ssh-keygen"):
        if host.which(tool) is None:
            raise HostError(f"{tool} not found; run scripts/install")
    if guest_forwards and host.which("socat") is None:
        raise HostError("socat not found; install 'socat' (scripts/install does)")


def prepare_machine(work: Path, image: Path, user: str, files: dict | None = None,
                    guest_forwards=(), volume: Path | None = None, host_forwards=(),
                    memory_mb: int = GUEST_MEMORY_MB, accel: str | None = None,
                    volume_size: str = "2G") -> tuple[Guest, list]:
    """Make in work what one boot of image needs: the overlay, the data
    volume (a blank one unless given), an ssh key, the config drive, free
    ports; return the Guest (not started yet) and qemu's argv."""
    image = Path(image).resolve()
    accel = accel or host.accelerator()
    instance_id = str(uuid.uuid4())
    fmt = image_info(image)["format"]
    overlay = work / "overlay.qcow2"
    run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", fmt, "-b", str(image),
         str(overlay)])
    if volume is None:
        volume = work / "volume.raw"
        run(["qemu-img", "create", "-q", "-f", "raw", str(volume), volume_size])
    elif not Path(volume).is_file():
        raise VerifyError(f"{volume}: no such volume file")
    key = work / "id_ed25519"
    run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "tib-boot", "-f", str(key)])
    drive = config_drive(work, work / "config-drive.iso", instance_id,
                         (work / "id_ed25519.pub").read_text().strip(), files or {})
    port = free_port()
    forwarded, taken = {}, {port}
    for guest_port in host_forwards:
        host_port = free_port()
        while host_port in taken:
            host_port = free_port()
        forwarded[guest_port] = host_port
        taken.add(host_port)
    console = work / "console.log"
    argv = qemu_argv(overlay, volume, drive, port, console, accel, guest_forwards,
                     memory_mb=memory_mb, host_forwards=tuple(forwarded.items()))
    (work / "qemu.argv").write_text(" ".join(argv) + "\n")
    guest = Guest(port, user, key, console, work, instance_id, accel,
                  forwarded=forwarded, memory_mb=memory_mb)
    return guest, argv


def start_qemu(guest: Guest, argv: list, detached: bool = False) -> subprocess.Popen:
    """Start qemu for guest. Detached, it runs in a session of its own with
    its stderr in the guest's folder (qemu.err), and outlives this process."""
    log.info(f"qemu ({guest.accel}{'' if guest.accel == 'kvm' else ': KVM not usable here'}), "
             f"ssh on 127.0.0.1:{guest.ssh_port}" + "".join(
                 f", guest port {g} on 127.0.0.1:{h}" for g, h in guest.forwarded.items()))
    if detached:
        with open(guest.workdir / "qemu.err", "w") as err:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                    stderr=err, start_new_session=True)
    else:
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                text=True)
    guest.proc = proc
    guest.powered_on = time.monotonic()
    return proc


def wait_until_up(guest: Guest, timeout: float = BOOT_TIMEOUT) -> None:
    """Wait for an ssh login, then for cloud-init to finish; VerifyError
    (with the console's tail) if qemu exits or the deadline passes."""
    start = guest.powered_on or time.monotonic()
    _wait_for_ssh(guest, start + timeout)
    _wait_for_cloud_init(guest, start + timeout)
    guest.boot_seconds = round(time.monotonic() - start, 1)


@contextlib.contextmanager
def booted(image: Path, user: str, files: dict | None = None, guest_forwards=(),
           timeout: float = BOOT_TIMEOUT, keep_workdir: bool = False,
           volume: Path | None = None, host_forwards=(), memory_mb: int = GUEST_MEMORY_MB,
           on_power_on=None):
    """Boot image on an overlay; yield a Guest once ssh answers.

    volume: a raw file to attach as /dev/vdb instead of a fresh blank one,
    as the same Cinder volume is attached again after a Nova rebuild.
    host_forwards: guest ports to reach from 127.0.0.1, each on a free port
    (Guest.forwarded says which).
    on_power_on: called with the Guest as soon as qemu has started (before
    ssh answers), to time what happens from power-on (scripts/benchmark.py)."""
    check_tools(guest_forwards)
    accel = host.accelerator()
    work = Path(tempfile.mkdtemp(prefix="tib-boot-"))
    proc = None
    try:
        guest, argv = prepare_machine(work, image, user, files, guest_forwards, volume,
                                      host_forwards, memory_mb, accel)
        proc = start_qemu(guest, argv)
        if on_power_on is not None:
            on_power_on(guest)
        wait_until_up(guest, timeout)
        yield guest
    finally:
        if proc is not None:
            stop(proc)
        if not keep_workdir:
            shutil.rmtree(work, ignore_errors=True)


def trove_files(expect, transport_url: str | None = None,
                **overrides) -> tuple[Injection, dict]:
    """What Trove injects at boot for this image (contract.injected), with
    the agent's broker reached through the guest forward."""
    url = transport_url or f"rabbit://guest:guest@{GUEST_FORWARD_IP}:5672/"
    injection = injected.for_image(expect, url, **overrides)
    return injection, injection.files(expect.paths)


CERT_FILES = ("ca.crt", "client.crt", "client.key")


def cert_files(folder: Path, staging: str) -> dict:
    """The certificates in folder, as files to deliver at boot to the
    certificate hook's staging folder (as Nova's injected files would)."""
    folder = Path(folder)
    if not (folder / "ca.crt").is_file():
        raise InputError(f"--certs {folder}: no ca.crt there (the set is ca.crt, and "
                         "optionally client.crt with client.key)")
    return {f"{staging}/{name}": (folder / name).read_text()
            for name in CERT_FILES if (folder / name).is_file()}
