"""The boot-time certificate hook on the real production image: certificates
made here at test time are delivered on a config drive, installed, rotated
and refused inside the booted guest; then a Nova rebuild is simulated (a
fresh overlay of the same image, the same data volume, nothing delivered)
and the restored certificates carry the agent's TLS connection to a
RabbitMQ that accepts only clients the test CA signed."""
import shutil
import subprocess
import time

import pytest

from tests import pki
from trove_image_builder.vm import boot
from trove_image_builder.contract import expectations, paths
from trove_image_builder.plumbing import imagefs
from trove_image_builder.vm.rabbit import BrokerTLS, ClientTLS, LocalRabbit, wait_for_rpc

from tests.helpers.cli import cli

pytestmark = pytest.mark.integration

STAGING = paths.current().cert_staging
CERTS = paths.current().certs
AGENT = paths.current().agent_unit


class Pki:
    def __init__(self):
        self.ca = pki.make_ca()
        self.client = pki.issue(self.ca, "guest agent")
        self.rotated = pki.issue(self.ca, "guest agent")
        self.expired = pki.issue(self.ca, "guest agent", expired=True)
        self.stranger = pki.issue(self.ca, "someone else")
        self.broker = pki.issue(self.ca, "broker", server=True,
                                sans=("127.0.0.1", boot.GUEST_FORWARD_IP, "localhost"))


@pytest.fixture(scope="module")
def certs():
    return Pki()


@pytest.fixture(scope="module")
def volume(tmp_path_factory):
    """The instance's data volume, blank as Cinder gives it (the agent
    makes its file system); shared by both boots."""
    path = tmp_path_factory.mktemp("volume") / "volume.raw"
    subprocess.run(["qemu-img", "create", "-q", "-f", "raw", str(path), "2G"], check=True)
    return path


def sh(guest, command: str) -> subprocess.CompletedProcess:
    return guest.ssh(command, timeout=120)


def out(guest, command: str) -> str:
    proc = sh(guest, command)
    assert proc.returncode == 0, f"{command}: {proc.stderr.strip()[-500:]}"
    return proc.stdout.strip()


def put(guest, path: str, text: str):
    proc = subprocess.run(guest.ssh_argv(f"sudo tee {path} >/dev/null"), input=text,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr


def state(guest, unit: str) -> str:
    return sh(guest, f"systemctl is-active {unit}").stdout.strip()


def serial(guest) -> str:
    return out(guest, f"openssl x509 -in {CERTS}/client.crt -noout -serial").split("=")[1]


def journal(guest) -> str:
    return out(guest, "sudo journalctl -b -u trove-certs --no-pager -o cat")


def deliver(guest, ca, client, key_of=None):
    put(guest, f"{STAGING}/ca.crt", ca.cert_pem)
    put(guest, f"{STAGING}/client.crt", client.cert_pem)
    put(guest, f"{STAGING}/client.key", (key_of or client).key_pem)


def wait_for_mount(guest, device: str, seconds=600) -> str:
    """Where the agent mounted the data volume, once it has."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        target = sh(guest, f"findmnt -n -o TARGET --source {device}").stdout.strip()
        if target:
            return target.splitlines()[0]
        time.sleep(5)
    raise AssertionError(f"the agent did not mount {device} within {seconds} s: " +
                         out(guest, f"sudo journalctl -u {AGENT} --no-pager -n 15"))


def power_off(guest):
    sh(guest, "sudo systemctl poweroff")
    try:
        guest.proc.wait(timeout=300)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"the guest did not power off: {guest.console_tail()}")


def _copy_on_volume(volume, mnt) -> dict:
    """The copy on the data volume, read from the host after the boot."""
    mnt.mkdir()
    subprocess.run(["mount", "-o", "loop,ro", str(volume), str(mnt)], check=True)
    try:
        copy = mnt / ".trove-certs"
        return {"mode": oct(copy.stat().st_mode & 0o777),
                **{p.name: p.read_text() for p in copy.iterdir()}}
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


def test_first_boot_installs_rotates_and_refuses(prod_mariadb, certs, volume, tmp_path):
    expect = expectations.load(prod_mariadb.path)
    assert expect.cert_hook, "prod-mariadb must get the certificate hook by default"
    _injection, files = boot.trove_files(expect)
    files[f"{STAGING}/ca.crt"] = certs.ca.cert_pem
    files[f"{STAGING}/client.crt"] = certs.client.cert_pem
    files[f"{STAGING}/client.key"] = certs.client.key_pem
    with boot.booted(prod_mariadb.path, expect.guest_user, files, volume=volume) as guest:
        assert state(guest, "trove-certs") == "active", journal(guest)
        assert "installed the delivered certificates" in journal(guest)
        modes = out(guest, f"sudo stat -c '%n %U %a' {CERTS} {CERTS}/ca.crt "
                           f"{CERTS}/client.crt {CERTS}/client.key").splitlines()
        assert modes == [f"{CERTS} trove 750", f"{CERTS}/ca.crt trove 644",
                         f"{CERTS}/client.crt trove 644", f"{CERTS}/client.key trove 400"]
        assert sh(guest, f"sudo -u nobody cat {CERTS}/client.key").returncode != 0
        # trusted system-wide: no -CAfile
        assert out(guest, f"openssl verify {CERTS}/client.crt") == f"{CERTS}/client.crt: OK"
        conf = out(guest, "cat /etc/trove/conf.d/zz-trove-certs.conf")
        assert f"ssl_key_file = {CERTS}/client.key" in conf
        assert out(guest, f"sudo ls -A {STAGING}") == ""
        assert serial(guest) == certs.client.serial
        assert state(guest, AGENT) == "active"

        # a blank volume: no copy at boot; once the agent has made and
        # mounted its file system, the sync timer's service keeps the copy
        assert "has no file system yet" in journal(guest)
        assert out(guest, "systemctl is-enabled trove-certs-sync.timer") == "enabled"
        mount_point = wait_for_mount(guest, "/dev/vdb")
        assert sh(guest, "sudo systemctl start trove-certs-sync").returncode == 0
        assert out(guest, f"sudo ls -A {mount_point}/.trove-certs").split() == \
            ["ca.crt", "client.crt", "client.key"]

        # rotation: a newer client certificate, the hook run again
        deliver(guest, certs.ca, certs.rotated)
        assert sh(guest, "sudo systemctl restart trove-certs").returncode == 0, journal(guest)
        assert serial(guest) == certs.rotated.serial
        assert state(guest, AGENT) == "active"

        # refusals: the agent is stopped, the journal says why, the set stays
        for bad, reason in ((dict(client=certs.expired), "client.crt expired on"),
                            (dict(client=certs.rotated, key_of=certs.stranger),
                             "client.key does not match client.crt")):
            deliver(guest, certs.ca, **bad)
            assert sh(guest, "sudo systemctl restart trove-certs").returncode != 0
            said = journal(guest)
            assert f"refused the delivered certificates in {STAGING}: {reason}" in said, said
            assert "the guest agent is not started with them" in said
            assert state(guest, AGENT) != "active"
            assert serial(guest) == certs.rotated.serial
        print("first boot took", guest.boot_seconds, "s")
        # Nova stops an instance cleanly before it rebuilds it
        power_off(guest)
    copy = _copy_on_volume(volume, tmp_path / "mnt")
    assert copy == {"mode": "0o700", "ca.crt": certs.ca.cert_pem,
                    "client.crt": certs.rotated.cert_pem, "client.key": certs.rotated.key_pem}


def test_rebuild_restores_from_the_volume_and_the_agent_answers_over_tls(
        prod_mariadb, certs, volume, tmp_path):
    expect = expectations.load(prod_mariadb.path)
    assert ".trove-certs" in subprocess.run(
        ["debugfs", "-R", "ls /", str(volume)], capture_output=True, text=True).stdout, \
        "the first boot left no copy on the volume"
    ca, _ = certs.ca.write(tmp_path, "ca")
    server_cert, server_key = certs.broker.write(tmp_path, "broker")
    client_cert, client_key = certs.rotated.write(tmp_path, "client")
    with LocalRabbit(tls=BrokerTLS(ca=ca, cert=server_cert, key=server_key)) as broker:
        injection, files = boot.trove_files(expect)
        # Trove's own configuration switches TLS on; the hook supplies the files
        files["/etc/trove/conf.d/trove-guestagent.conf"] += \
            "\n[oslo_messaging_rabbit]\nssl = True\n"
        with boot.booted(prod_mariadb.path, expect.guest_user, files, volume=volume,
                         guest_forwards=((5672, broker.port),)) as guest:
            said = journal(guest)
            assert "restored the certificates from the data volume" in said, said
            assert serial(guest) == certs.rotated.serial
            assert out(guest, f"openssl verify {CERTS}/client.crt") == \
                f"{CERTS}/client.crt: OK"
            answer, waited = wait_for_rpc(
                broker.url, injection.guest_id, 600,
                tls=ClientTLS(ca=ca, cert=client_cert, key=client_key),
                rpc_key=injection.rpc_key)
            assert answer is True
            shown = dict(line.split("=", 1) for line in out(
                guest, f"systemctl show {AGENT} -p ActiveState -p NRestarts").splitlines())
            assert shown == {"ActiveState": "active", "NRestarts": "0"}, shown
            print("rebuilt instance: ssh after", guest.boot_seconds, "s; rpc_ping over TLS "
                  "answered after", waited, "s")


def test_verify_fails_on_a_production_image_with_a_certificate(prod_mariadb, certs, tmp_path):
    """The offline check is real: one CA certificate left in the image fails it."""
    planted = tmp_path / "planted.qcow2"
    shutil.copy(prod_mariadb.path, planted)
    shutil.copy(prod_mariadb.path.with_name(prod_mariadb.path.name + ".manifest.json"),
                tmp_path / "planted.qcow2.manifest.json")
    with imagefs.mounted(planted, writable=True) as root:
        (root / "usr/local/share/ca-certificates/site-ca.crt").write_text(certs.ca.cert_pem)
    proc = cli("verify", str(planted))
    assert proc.returncode == 1, proc.stderr
    assert ("FAIL planted.qcow2: offline::test_no_trove_certificates: certificates or keys "
            "baked into the image: ['/usr/local/share/ca-certificates/site-ca.crt']") \
        in proc.stderr, proc.stderr[-2000:]
    assert "PASS planted.qcow2: offline::test_certificate_hook" in proc.stderr
