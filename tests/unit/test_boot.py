"""Booting, without a boot: the qemu command line, the config drive (a real
ISO made with xorriso), the files Trove injects, the ssh settings; and the
failures before qemu starts. No VM is started."""
import configparser
import contextlib
import json
from pathlib import Path
import shutil
import socket
import subprocess
import time

import paramiko
import pytest

from tests.helpers import manifests
from trove_image_builder.vm import boot
from trove_image_builder.plumbing import host
from trove_image_builder.verify import runner as verify
from trove_image_builder.verify import booted as booted_mod
from trove_image_builder.errors import BuildError, HostError, VerifyError

INSTANCE = "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0"
PUBKEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIUnitTestKey tib-boot"

needs_xorriso = pytest.mark.skipif(shutil.which("xorriso") is None, reason="no xorriso")


def argv_for(tmp_path, accel="tcg", guest_forwards=(), port=2222):
    return boot.qemu_argv(tmp_path / "overlay.qcow2", tmp_path / "volume.raw",
                          tmp_path / "drive.iso", port, tmp_path / "console.log", accel,
                          guest_forwards)


def option(argv, name) -> list:
    """Every value given to a qemu option, in order."""
    return [argv[i + 1] for i, a in enumerate(argv) if a == name]


@pytest.fixture
def fake_which(monkeypatch):
    """Tools found at /opt/fake/TOOL, except those listed in fake_which.missing."""
    def which(tool):
        return None if tool in which.missing else f"/opt/fake/{tool}"
    which.missing = set()
    monkeypatch.setattr(host, "which", which)
    return which


@pytest.fixture(scope="module")
def prod_expect():
    return manifests.contract("prod-mariadb")


# --------------------------------------------------------------------------
# qemu_argv

def test_qemu_argv_network_is_restricted_to_loopback_ssh(tmp_path):
    argv = argv_for(tmp_path, port=40022)
    (netdev,) = option(argv, "-netdev")
    parts = netdev.split(",")
    assert parts[0] == "user"
    assert "id=net0" in parts
    assert "restrict=on" in parts
    assert [p for p in parts if p.startswith("hostfwd=")] == \
        ["hostfwd=tcp:127.0.0.1:40022-:22"]
    assert "guestfwd" not in netdev
    assert f"virtio-net-pci,netdev=net0,mac={boot.GUEST_MAC}" in option(argv, "-device")


def test_qemu_argv_guest_forward_to_the_hosts_loopback(tmp_path, fake_which):
    argv = argv_for(tmp_path, guest_forwards=((5672, 35672),))
    (netdev,) = option(argv, "-netdev")
    assert "restrict=on" in netdev.split(",")
    assert netdev.endswith(",guestfwd=tcp:10.0.2.100:5672"
                           "-cmd:/opt/fake/socat - TCP:127.0.0.1:35672")
    # hostfwd stays on 127.0.0.1 only
    assert "hostfwd=tcp:127.0.0.1:2222-:22" in netdev
    assert "hostfwd=tcp::" not in netdev and "0.0.0.0" not in netdev


def test_qemu_argv_several_guest_forwards(tmp_path, fake_which):
    argv = argv_for(tmp_path, guest_forwards=((5672, 1001), (8080, 1002)))
    (netdev,) = option(argv, "-netdev")
    fwds = [p for p in netdev.split(",") if p.startswith("guestfwd=")]
    assert fwds == ["guestfwd=tcp:10.0.2.100:5672-cmd:/opt/fake/socat - TCP:127.0.0.1:1001",
                    "guestfwd=tcp:10.0.2.100:8080-cmd:/opt/fake/socat - TCP:127.0.0.1:1002"]


def test_qemu_argv_guest_forward_without_socat_found_names_socat(tmp_path, fake_which):
    fake_which.missing.add("socat")
    (netdev,) = option(argv_for(tmp_path, guest_forwards=((5672, 1),)), "-netdev")
    assert "-cmd:socat - TCP:127.0.0.1:1" in netdev


def test_qemu_argv_host_forwards_to_guest_ports_from_loopback_only(tmp_path):
    argv = boot.qemu_argv(tmp_path / "o", tmp_path / "v", tmp_path / "d", 2222,
                          tmp_path / "c", "tcg", host_forwards=((3306, 40306), (5432, 40432)))
    (netdev,) = option(argv, "-netdev")
    parts = netdev.split(",")
    assert "restrict=on" in parts
    assert [p for p in parts if p.startswith("hostfwd=")] == [
        "hostfwd=tcp:127.0.0.1:2222-:22", "hostfwd=tcp:127.0.0.1:40306-:3306",
        "hostfwd=tcp:127.0.0.1:40432-:5432"]
    assert option(argv, "-m") == [str(boot.GUEST_MEMORY_MB)] == ["2048"]


def test_qemu_argv_tcg_uses_cpu_max(tmp_path):
    argv = argv_for(tmp_path, accel="tcg")
    assert argv[0] == "qemu-system-x86_64"
    assert option(argv, "-accel") == ["tcg"]
    assert option(argv, "-cpu") == ["max"]


def test_qemu_argv_kvm_uses_cpu_host(tmp_path):
    argv = argv_for(tmp_path, accel="kvm")
    assert option(argv, "-accel") == ["kvm"]
    assert option(argv, "-cpu") == ["host"]


def test_qemu_argv_drives_in_order(tmp_path):
    drives = option(argv_for(tmp_path), "-drive")
    assert drives == [
        f"file={tmp_path / 'overlay.qcow2'},if=virtio,format=qcow2",
        f"file={tmp_path / 'volume.raw'},if=virtio,format=raw",
        f"file={tmp_path / 'drive.iso'},if=virtio,format=raw,readonly=on",
    ]


def test_qemu_argv_only_the_config_drive_is_read_only(tmp_path):
    drives = option(argv_for(tmp_path), "-drive")
    assert ["readonly=on" in d.split(",") for d in drives] == [False, False, True]


def test_qemu_argv_console_memory_cpus(tmp_path):
    argv = boot.qemu_argv(tmp_path / "o", tmp_path / "v", tmp_path / "d", 1,
                          tmp_path / "console.log", "tcg", memory_mb=1024, cpus=3)
    assert option(argv, "-serial") == [f"file:{tmp_path / 'console.log'}"]
    assert option(argv, "-m") == ["1024"]
    assert option(argv, "-smp") == ["3"]
    assert option(argv, "-display") == ["none"]
    assert "-nodefaults" in argv and "-no-reboot" in argv


# --------------------------------------------------------------------------
# config_drive: a real ISO

@pytest.fixture
def drive(tmp_path):
    files = {"/etc/trove/conf.d/trove-guestagent.conf": "[DEFAULT]\ncontrol_exchange = trove\n",
             "/etc/trove/conf.d/guest_info.conf": "[DEFAULT]\nguest_id = g-1\n"}
    work = tmp_path / "work"
    work.mkdir()
    iso = boot.config_drive(work, tmp_path / "cd.iso", INSTANCE, PUBKEY, files)
    return iso, files


def extract(iso: Path, dest: Path) -> Path:
    subprocess.run(["xorriso", "-osirrox", "on", "-indev", str(iso), "-extract", "/", str(dest)],
                   check=True, capture_output=True)
    return dest


@needs_xorriso
def test_config_drive_is_an_iso_labelled_config_2(drive, tmp_path):
    iso, _ = drive
    assert iso == tmp_path / "cd.iso"
    data = iso.read_bytes()
    # the primary volume descriptor at sector 16; its volume id at byte 40
    assert data[32769:32774] == b"CD001"
    assert data[32808:32840].decode("ascii").rstrip() == "config-2"


@needs_xorriso
def test_config_drive_layout(drive):
    iso, _ = drive
    found = subprocess.run(["xorriso", "-indev", str(iso), "-find", "/", "-type", "f"],
                           check=True, capture_output=True, text=True).stdout.split()
    assert sorted(p.strip("'") for p in found) == [
        "/openstack/content/0000", "/openstack/content/0001",
        "/openstack/latest/meta_data.json", "/openstack/latest/network_data.json",
        "/openstack/latest/vendor_data.json"]


@needs_xorriso
def test_config_drive_meta_data(drive, tmp_path):
    iso, files = drive
    root = extract(iso, tmp_path / "x")
    meta = json.loads((root / "openstack/latest/meta_data.json").read_text())
    assert meta["uuid"] == INSTANCE
    assert meta["hostname"] == meta["name"] == "tib-0f1e2d3c"
    assert meta["public_keys"] == {"verify": PUBKEY}
    assert sorted(e["path"] for e in meta["files"]) == sorted(files)
    for entry in meta["files"]:
        assert entry["content_path"].startswith("/content/")
        injected = root / "openstack" / entry["content_path"].lstrip("/")
        assert injected.read_text() == files[entry["path"]]
    assert json.loads((root / "openstack/latest/vendor_data.json").read_text()) == {}


@needs_xorriso
def test_config_drive_network_is_ipv4_dhcp_on_the_guests_port(drive, tmp_path):
    """IPv4 DHCP only, on the port qemu gives the guest: cloud-init's
    fallback would also ask DHCPv6, which qemu's user network never answers."""
    root = extract(drive[0], tmp_path / "x")
    net = json.loads((root / "openstack/latest/network_data.json").read_text())
    (link,) = net["links"]
    assert link["ethernet_mac_address"] == boot.GUEST_MAC
    assert [(n["type"], n["link"]) for n in net["networks"]] == [("ipv4_dhcp", link["id"])]


@needs_xorriso
def test_config_drive_without_files(tmp_path):
    iso = boot.config_drive(tmp_path, tmp_path / "cd.iso", INSTANCE, PUBKEY, {})
    meta = json.loads((extract(iso, tmp_path / "x") / "openstack/latest/meta_data.json")
                      .read_text())
    assert meta["files"] == []
    assert meta["public_keys"] == {"verify": PUBKEY}


def test_config_drive_without_xorriso(tmp_path, fake_which):
    fake_which.missing.add("xorriso")
    with pytest.raises(HostError, match="xorriso not found"):
        boot.config_drive(tmp_path, tmp_path / "cd.iso", INSTANCE, PUBKEY, {})
    assert not (tmp_path / "cd.iso").exists()


# --------------------------------------------------------------------------
# trove_files

def parse(text: str) -> configparser.ConfigParser:
    conf = configparser.ConfigParser(interpolation=None)
    conf.read_string(text)
    return conf


def test_trove_files_guest_info_has_every_key_trove_writes(prod_expect):
    injection, files = boot.trove_files(prod_expect)
    assert sorted(files) == ["/etc/trove/conf.d/guest_info.conf",
                             "/etc/trove/conf.d/trove-guestagent.conf"]
    text = files["/etc/trove/conf.d/guest_info.conf"]
    info = parse(text)["DEFAULT"]
    # trove/instance/models.py Instance.get_injected_files, in its order
    assert list(info) == ["guest_id", "datastore_manager", "datastore_version", "tenant_id",
                          "datastore_registry_ext", "replication_strategy", "ssl_mode",
                          "network_isolation", "instance_rpc_encr_key"]
    assert info["guest_id"] == injection.guest_id
    assert info["datastore_manager"] == "mariadb"
    assert info["datastore_version"] == "11.8"
    assert info["datastore_registry_ext"] == \
        "mariadb:trove.guestagent.datastore.mariadb.manager.Manager"
    assert info["replication_strategy"] == \
        "trove.guestagent.strategies.replication.mariadb_gtid.MariaDBGTIDReplication"
    assert (info["ssl_mode"], info["network_isolation"]) == ("None", "True")
    assert info["instance_rpc_encr_key"] == injection.rpc_key and len(injection.rpc_key) == 32
    # written as Trove writes it: key=value, no spaces
    assert f"\nguest_id={injection.guest_id}\n" in text


def test_trove_files_without_secure_rpc_have_no_key(prod_expect):
    _, files = boot.trove_files(prod_expect, rpc_key=None)
    assert "instance_rpc_encr_key" not in parse(
        files["/etc/trove/conf.d/guest_info.conf"])["DEFAULT"]


def test_trove_files_optional_files_as_trove_writes_them(prod_expect):
    _, files = boot.trove_files(
        prod_expect, controller_address="10.0.0.5", docker_daemon={"bip": "172.18.0.1/24"},
        eth1={"mac_address": "fa:16:3e:00:00:01", "ipv4_address": "192.168.1.5"})
    assert files["/etc/trove/controller.conf"] == "CONTROLLER=10.0.0.5"
    assert json.loads(files["/etc/trove/eth1.json"])["ipv4_address"] == "192.168.1.5"
    # with a user port plugged, docker gets no bridge (and keeps the bip asked for)
    assert json.loads(files["/etc/docker/daemon.json"]) == {
        "bip": "172.18.0.1/24", "bridge": "none", "ip-forward": False, "iptables": False}


def test_trove_files_datastore_manager_follows_the_image(tmp_path):
    exp = manifests.contract("prod-postgresql", image=tmp_path / "x")
    _, files = boot.trove_files(exp)
    assert parse(files["/etc/trove/conf.d/guest_info.conf"])["DEFAULT"][
        "datastore_manager"] == "postgresql"


def test_trove_files_agent_conf_points_at_the_forwarded_broker(prod_expect):
    _, files = boot.trove_files(prod_expect)
    conf = parse(files["/etc/trove/conf.d/trove-guestagent.conf"])["DEFAULT"]
    assert conf["transport_url"] == "rabbit://guest:guest@10.0.2.100:5672/"
    assert conf["control_exchange"] == "trove"
    assert conf["log_dir"] == "/var/log/trove"


def test_trove_files_given_guest_id_and_url(prod_expect):
    injection, files = boot.trove_files(prod_expect, guest_id="g-42",
                                        transport_url="rabbit://u:p@10.0.2.100:5673/")
    assert injection.guest_id == "g-42"
    assert parse(files["/etc/trove/conf.d/guest_info.conf"])["DEFAULT"]["guest_id"] == "g-42"
    assert parse(files["/etc/trove/conf.d/trove-guestagent.conf"])["DEFAULT"][
        "transport_url"] == "rabbit://u:p@10.0.2.100:5673/"


def test_trove_files_new_guest_id_each_time(prod_expect):
    first, second = boot.trove_files(prod_expect)[0], boot.trove_files(prod_expect)[0]
    assert first.guest_id != second.guest_id and first.rpc_key != second.rpc_key


# --------------------------------------------------------------------------
# Guest

@pytest.fixture
def guest(tmp_path):
    return boot.Guest(ssh_port=40122, user="trove", key=tmp_path / "id_ed25519",
                      console=tmp_path / "console.log", workdir=tmp_path,
                      instance_id=INSTANCE, accel="tcg")


def test_guest_ssh_config_content(guest, tmp_path):
    path = guest.ssh_config()
    assert path == tmp_path / "ssh_config"
    assert path.read_text() == (
        "Host tib-guest\n"
        "  HostName 127.0.0.1\n"
        "  Port 40122\n"
        "  User trove\n"
        f"  IdentityFile {tmp_path / 'id_ed25519'}\n"
        "  StrictHostKeyChecking no\n"
        "  UserKnownHostsFile /dev/null\n")


def test_guest_ssh_config_as_paramiko_reads_it(guest, tmp_path):
    """testinfra's paramiko backend resolves guest.hostspec through it."""
    assert guest.hostspec == "paramiko://tib-guest"
    found = paramiko.SSHConfig.from_path(str(guest.ssh_config())).lookup("tib-guest")
    assert found["hostname"] == "127.0.0.1"
    assert found["port"] == "40122"
    assert found["user"] == "trove"
    assert found["identityfile"] == [str(tmp_path / "id_ed25519")]


def test_guest_ssh_argv(guest, tmp_path):
    argv = guest.ssh_argv("uptime")
    assert argv[0] == "ssh"
    assert argv[-2:] == ["trove@127.0.0.1", "uptime"]
    assert argv[argv.index("-p") + 1] == "40122"
    assert argv[argv.index("-i") + 1] == str(tmp_path / "id_ed25519")
    assert "StrictHostKeyChecking=no" in argv


def test_guest_console_tail(guest):
    assert guest.console_tail() == ""  # no console yet
    guest.console.write_text("".join(f"line {n}\n" for n in range(40)))
    assert guest.console_tail(3) == "line 37\nline 38\nline 39"


# --------------------------------------------------------------------------
# free_port

def test_free_port_is_bindable_on_loopback():
    port = boot.free_port()
    assert 1024 <= port <= 65535
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port))
        sock.listen()


# --------------------------------------------------------------------------
# failures before or while waiting for the guest (no qemu started)

@pytest.mark.parametrize("tool", ["qemu-system-x86_64", "qemu-img", "ssh-keygen"])
def test_booted_without_a_tool(tmp_path, fake_which, tool):
    fake_which.missing.add(tool)
    image = tmp_path / "x.qcow2"
    image.write_bytes(b"x")
    with pytest.raises(HostError, match=f"{tool} not found"):
        with boot.booted(image, "trove"):
            pytest.fail("booted without " + tool)


def test_booted_with_forwards_needs_socat(tmp_path, fake_which):
    fake_which.missing.add("socat")
    with pytest.raises(HostError, match="socat not found"):
        with boot.booted(tmp_path / "x.qcow2", "trove", guest_forwards=((5672, 1),)):
            pytest.fail("booted without socat")


def test_wait_for_ssh_reports_qemu_exiting_with_the_console(guest):
    guest.console.write_text("SeaBIOS\nqemu: could not load kernel\n")
    guest.proc = subprocess.Popen(["sh", "-c", "exit 3"])
    guest.proc.wait()
    with pytest.raises(VerifyError) as err:
        boot._wait_for_ssh(guest, time.monotonic() + 60)
    assert err.value.message.startswith("qemu exited with code 3 while booting; console:\n")
    assert "could not load kernel" in err.value.message


def test_wait_for_ssh_deadline_passed(guest):
    guest.proc = subprocess.Popen(["sleep", "30"])
    try:
        with pytest.raises(VerifyError, match="no ssh login as trove within"):
            boot._wait_for_ssh(guest, time.monotonic() - 1)
    finally:
        guest.proc.kill()
        guest.proc.wait()


@pytest.fixture
def ssh_answers(guest, monkeypatch):
    """guest.ssh answers with the return codes in ssh_answers.codes (then 0),
    or raises what is there; boot's sleeps take 10 ms."""
    calls = []

    def ssh(command, timeout=300):
        calls.append((command, timeout))
        answer = ssh.codes.pop(0) if ssh.codes else 0
        if isinstance(answer, BaseException):
            raise answer
        return subprocess.CompletedProcess(command, answer, "",
                                           "Connection refused" if answer == 255 else "")
    ssh.codes = []
    ssh.calls = calls
    guest.ssh = ssh
    real_sleep = time.sleep
    monkeypatch.setattr(boot.time, "sleep", lambda s: real_sleep(0.01))
    return ssh


def test_wait_for_cloud_init_rides_out_sshd_restarting(guest, ssh_answers):
    ssh_answers.codes = [255, 255, 0]
    boot._wait_for_cloud_init(guest, time.monotonic() + 60)
    assert [c for c, _ in ssh_answers.calls] == ["cloud-init status --wait"] * 3
    assert all(t >= 30 for _, t in ssh_answers.calls)


def test_wait_for_cloud_init_done_with_errors_is_for_the_checks(guest, ssh_answers):
    """cloud-init's own verdict (rc 1 or 2) is test_cloud_init_finished_without_errors's."""
    ssh_answers.codes = [2]
    boot._wait_for_cloud_init(guest, time.monotonic() + 60)
    assert len(ssh_answers.calls) == 1


def test_wait_for_cloud_init_gives_up_with_the_console(guest, ssh_answers):
    guest.console.write_text("cloud-init[612]: still running\n")
    ssh_answers.codes = [255] * 1000
    with pytest.raises(VerifyError) as err:
        boot._wait_for_cloud_init(guest, time.monotonic() + 0.2)
    assert err.value.message.startswith("cloud-init did not finish within ")
    assert "(Connection refused)" in err.value.message
    assert err.value.message.endswith("console:\ncloud-init[612]: still running")


def test_wait_for_cloud_init_ssh_timing_out(guest, ssh_answers):
    ssh_answers.codes = [subprocess.TimeoutExpired("ssh", 30)]
    with pytest.raises(VerifyError, match="cloud-init did not finish"):
        boot._wait_for_cloud_init(guest, time.monotonic() + 60)
    assert len(ssh_answers.calls) == 1


def test_wait_for_cloud_init_notices_qemu_exiting(guest, ssh_answers):
    guest.proc = subprocess.Popen(["sh", "-c", "exit 0"])
    guest.proc.wait()
    ssh_answers.codes = [255] * 1000
    with pytest.raises(VerifyError) as err:
        boot._wait_for_cloud_init(guest, time.monotonic() + 0.5)
    assert "qemu exited" in err.value.message


# --------------------------------------------------------------------------
# booted_checks, with booted and run_checks replaced at the seam

@pytest.fixture
def fake_boot(monkeypatch, guest):
    """boot.booted yields guest (or raises fake_boot.raises); verify.run_checks
    records its arguments."""
    class Fake:
        raises = None
        booted_args = None
        booted_kwargs = None
        run_checks_args = None
    fake = Fake()

    @contextlib.contextmanager
    def booted(image, user, files=None, guest_forwards=(), **kwargs):
        fake.booted_args = (image, user, files, guest_forwards)
        fake.booted_kwargs = kwargs
        if fake.raises is not None:
            raise fake.raises
        guest.boot_seconds = 12.5
        yield guest

    def run_checks(test_file, hosts, exp, report, stage, junit=None, extra_fixtures=None,
                   host_args=()):
        fake.run_checks_args = (test_file, hosts, stage, junit, extra_fixtures, host_args)

    monkeypatch.setattr(booted_mod, "booted", booted)
    monkeypatch.setattr(booted_mod, "run_checks", run_checks)
    return fake


def test_booted_checks_wires_the_guest_to_the_checks(fake_boot, prod_expect, guest, tmp_path):
    report = verify.Report("/images/x.qcow2")
    booted_mod.booted_checks(Path("/images/x.qcow2"), prod_expect, report, junit=tmp_path / "j")
    image, user, files, forwards = fake_boot.booted_args
    assert (image, user, forwards) == (Path("/images/x.qcow2"), "trove", ())
    test_file, hosts, stage, junit, extra, host_args = fake_boot.run_checks_args
    assert (test_file, hosts, stage, junit) == ("test_booted.py", "paramiko://tib-guest",
                                                "booted", tmp_path / "j")
    assert host_args == (f"--ssh-config={tmp_path / 'ssh_config'}",)
    booted = extra["booted"]
    assert booted["guest"] is guest
    assert booted["contract"] is False and booted["broker"] is None
    # the guest id the checks get is the one injected into the guest
    info = parse(files["/etc/trove/conf.d/guest_info.conf"])["DEFAULT"]
    assert info["guest_id"] == booted["guest_id"]
    assert report.seconds["boot"] == 12.5
    assert "booted" in report.seconds


def test_booted_checks_with_prepare_forwards_the_datastore_port(fake_boot, prod_expect,
                                                                monkeypatch):
    monkeypatch.setattr(host, "which", lambda tool: f"/opt/fake/{tool}")
    monkeypatch.setattr(host, "accelerator", lambda: "tcg")

    class Broker:
        port = 35672
        url = "rabbit://guest:guest@127.0.0.1:35672/"

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False
    from trove_image_builder.vm import rabbit
    monkeypatch.setattr(rabbit, "LocalRabbit", Broker)
    report = verify.Report("/images/x.qcow2")
    booted_mod.booted_checks(Path("/images/x.qcow2"), prod_expect, report, prepare=True)
    _, _, _, forwards = fake_boot.booted_args
    assert forwards == ((5672, 35672),)                     # prepare implies the contract
    assert fake_boot.booted_kwargs["host_forwards"] == (3306,)  # Trove's [mariadb] tcp_ports
    booted = fake_boot.run_checks_args[4]["booted"]
    assert (booted["prepare"], booted["contract"]) == (True, True)
    assert booted["tenant_id"] == "trove-image-builder"
    assert booted["seconds"] is report.seconds     # where the check puts its timings
    # under TCG the agent waits for its datastore as long as the controller does
    agent_conf = parse(fake_boot.booted_args[2]["/etc/trove/conf.d/trove-guestagent.conf"])
    assert agent_conf["DEFAULT"]["state_change_wait_time"] == "900"
    info = parse(fake_boot.booted_args[2]["/etc/trove/conf.d/guest_info.conf"])["DEFAULT"]
    assert info["tenant_id"] == booted["tenant_id"]
    assert info["instance_rpc_encr_key"] == booted["rpc_key"]


def test_booted_checks_without_prepare_forward_no_datastore_port(fake_boot, prod_expect):
    booted_mod.booted_checks(Path("/images/x.qcow2"), prod_expect, verify.Report("x"))
    assert fake_boot.booted_kwargs["host_forwards"] == ()
    assert fake_boot.run_checks_args[4]["booted"]["prepare"] is False
    agent_conf = parse(fake_boot.booted_args[2]["/etc/trove/conf.d/trove-guestagent.conf"])
    assert "state_change_wait_time" not in agent_conf["DEFAULT"]


def test_booted_checks_turns_a_build_error_into_a_verify_error(fake_boot, prod_expect):
    fake_boot.raises = BuildError("command failed with exit code 1: qemu-img create")
    with pytest.raises(VerifyError, match="^command failed with exit code 1: qemu-img create$"):
        booted_mod.booted_checks(Path("/images/x.qcow2"), prod_expect, verify.Report("x"))
