"""The boot-time certificate hook (elements/trove-certs), run for real on
this machine against certificates made at test time: its folders are moved
under a temporary root, the trust store update is a no-op, and the data
volume is a folder (its device lookup and mounting are exercised by the
booted test)."""
from pathlib import Path
import shutil
import stat
import subprocess

import pytest

from tests import pki
from tests.helpers.certs_hook import FILES, HOOK, Guest  # noqa: F401

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl")


@pytest.fixture
def guest(tmp_path):
    return Guest(tmp_path)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_delivered_set_is_installed_trusted_kept_and_unstaged(guest, ca, client):
    guest.deliver(ca, client)
    proc = guest.run("boot")
    assert proc.returncode == 0, proc.stderr
    assert "installed the delivered certificates: CA 'Test Trove CA', client certificate " \
        f"serial {client.serial}" in proc.stdout
    assert guest.installed() == {"ca.crt": ca.cert_pem, "client.crt": client.cert_pem,
                                 "client.key": client.key_pem}
    assert _mode(guest.certs) == 0o750
    assert _mode(guest.certs / "client.key") == 0o400
    assert _mode(guest.certs / "ca.crt") == 0o644
    assert (guest.trust / "trove-ca.crt").read_text() == ca.cert_pem
    conf = guest.agent_conf.read_text()
    assert f"ssl_ca_file = {guest.certs}/ca.crt" in conf
    assert f"ssl_cert_file = {guest.certs}/client.crt" in conf
    assert f"ssl_key_file = {guest.certs}/client.key" in conf
    assert conf.splitlines()[2] == "[oslo_messaging_rabbit]"
    assert list(guest.staging.iterdir()) == []
    assert guest.kept() == guest.installed()
    assert _mode(guest.copy) == 0o700
    # the openssl on this machine agrees with what was installed
    subprocess.run(["openssl", "verify", "-CAfile", guest.certs / "ca.crt",
                    guest.certs / "client.crt"], check=True, capture_output=True)


def test_second_boot_changes_nothing(guest, ca, client):
    guest.deliver(ca, client)
    assert guest.run("boot").returncode == 0
    before = {p: p.stat().st_mtime_ns for p in [*guest.certs.iterdir(), *guest.copy.iterdir()]}
    proc = guest.run("boot")
    assert proc.returncode == 0, proc.stderr
    assert "certificates in place" in proc.stdout
    assert "kept a copy" not in proc.stdout
    after = {p: p.stat().st_mtime_ns for p in [*guest.certs.iterdir(), *guest.copy.iterdir()]}
    assert after == before


def test_new_root_disk_restores_from_the_volume(guest, ca, client):
    guest.deliver(ca, client)
    assert guest.run("boot").returncode == 0
    kept = guest.kept()
    shutil.rmtree(guest.certs)
    guest.agent_conf.unlink()
    shutil.rmtree(guest.trust)
    proc = guest.run("boot")
    assert proc.returncode == 0, proc.stderr
    assert "restored the certificates from the data volume" in proc.stdout
    assert guest.installed() == kept
    assert (guest.trust / "trove-ca.crt").read_text() == ca.cert_pem
    assert "ssl_key_file" in guest.agent_conf.read_text()


def test_a_newer_delivery_rotates_the_installed_set_and_the_copy(guest, ca, client):
    guest.deliver(ca, client)
    assert guest.run("boot").returncode == 0
    new_ca = pki.make_ca("Rotated CA")
    newer = pki.issue(new_ca, "guest agent")
    guest.deliver(new_ca, newer)
    proc = guest.run("boot")
    assert proc.returncode == 0, proc.stderr
    assert f"serial {newer.serial}" in proc.stdout
    assert guest.installed()["client.crt"] == newer.cert_pem
    assert guest.kept() == guest.installed()
    assert (guest.trust / "trove-ca.crt").read_text() == new_ca.cert_pem
    assert not list(guest.volume.glob(".trove-certs.*")), "left-over copy folders"


def test_a_ca_only_delivery_drops_the_old_client_pair(guest, ca, client):
    guest.deliver(ca, client)
    assert guest.run("boot").returncode == 0
    guest.deliver(ca)
    proc = guest.run("boot")
    assert proc.returncode == 0, proc.stderr
    assert sorted(guest.installed()) == ["ca.crt"]
    assert sorted(guest.kept()) == ["ca.crt"]
    assert "ssl_cert_file" not in guest.agent_conf.read_text()


def _refusals(ca, client):
    other_ca = pki.make_ca("Another CA")
    return {
        "expired client": (dict(ca=ca, client=pki.issue(ca, "old", expired=True)),
                           "client.crt expired on "),
        "expired CA": (dict(ca=pki.make_ca("Old CA", expired=True)), "ca.crt expired on "),
        "key of another certificate": (dict(ca=ca, client=client,
                                            key_of=pki.issue(ca, "someone else")),
                                       "client.key does not match client.crt"),
        "signed by another CA": (dict(ca=ca, client=pki.issue(other_ca, "stranger")),
                                 "client.crt is not signed by ca.crt (unable to get local "
                                 "issuer certificate)"),
    }


@pytest.mark.parametrize("case", ["expired client", "expired CA",
                                  "key of another certificate", "signed by another CA"])
def test_a_bad_delivery_is_refused_and_the_good_set_stays(guest, ca, client, case):
    guest.deliver(ca, client)
    assert guest.run("boot").returncode == 0
    good, kept = guest.installed(), guest.kept()
    delivery, reason = _refusals(ca, client)[case]
    guest.deliver(**delivery)
    proc = guest.run("boot")
    assert proc.returncode == 1
    assert proc.stderr.startswith(
        f"trove-certs: refused the delivered certificates in {guest.staging}: {reason}"), \
        proc.stderr
    assert proc.stderr.rstrip().endswith("the guest agent is not started with them")
    assert guest.installed() == good
    assert guest.kept() == kept


@pytest.mark.parametrize("files, reason", [
    ({"ca.crt": "not a certificate\n"}, "ca.crt is not a PEM certificate"),
    ({"client.crt": "x"}, "no ca.crt (the CA certificate is required)"),
    ({"ca.crt": None, "client.crt": None}, "client.crt without client.key"),
    ({"ca.crt": None, "client.key": None}, "client.key without client.crt"),
    ({"ca.crt": None, "client.crt": None, "client.key": "-----BEGIN PRIVATE KEY-----\nxx\n"},
     "client.key is not a PEM private key"),
])
def test_malformed_deliveries_are_refused_on_a_new_instance(guest, ca, client, files, reason):
    good = {"ca.crt": ca.cert_pem, "client.crt": client.cert_pem, "client.key": client.key_pem}
    guest.staging.mkdir(parents=True)
    for name, text in files.items():
        (guest.staging / name).write_text(good[name] if text is None else text)
    proc = guest.run("boot")
    assert proc.returncode == 1
    assert f": {reason}" in proc.stderr, proc.stderr
    assert guest.installed() == {}
    assert not guest.agent_conf.exists()


def test_an_installed_set_that_expired_since_is_refused(guest, ca):
    old = pki.issue(ca, "old", expired=True)
    guest.certs.mkdir(parents=True)
    (guest.certs / "ca.crt").write_text(ca.cert_pem)
    (guest.certs / "client.crt").write_text(old.cert_pem)
    (guest.certs / "client.key").write_text(old.key_pem)
    proc = guest.run("boot")
    assert proc.returncode == 1
    assert f"refused the installed certificates in {guest.certs}: client.crt expired" \
        in proc.stderr


def test_nothing_anywhere_starts_the_agent_as_configured(guest):
    guest.agent_conf.write_text("stale")
    proc = guest.run("boot")
    assert proc.returncode == 0, proc.stderr
    assert "no certificates delivered, installed or kept on the data volume" in proc.stdout
    assert not guest.agent_conf.exists()


def test_the_user_hook_delivers_into_the_staging_folder(guest, ca, client, tmp_path):
    hook = tmp_path / "fetch-from-store"
    (tmp_path / "store").mkdir()
    (tmp_path / "store" / "ca.crt").write_text(ca.cert_pem)
    (tmp_path / "store" / "client.crt").write_text(client.cert_pem)
    (tmp_path / "store" / "client.key").write_text(client.key_pem)
    hook.write_text(f"#!/bin/sh\nset -e\ntest \"$1\" = \"$TROVE_CERTS_STAGING\"\n"
                    f"cp {tmp_path}/store/* \"$1\"/\n")
    hook.chmod(0o755)
    guest.user_hook = str(hook)
    proc = guest.run("boot")
    assert proc.returncode == 0, proc.stderr
    assert f"running the user hook {hook}" in proc.stdout
    assert guest.installed()["client.crt"] == client.cert_pem


def test_a_failing_user_hook_stops_the_agent(guest, tmp_path):
    hook = tmp_path / "broken-store"
    hook.write_text("#!/bin/sh\necho 'vault: permission denied' >&2\nexit 3\n")
    hook.chmod(0o755)
    guest.user_hook = str(hook)
    proc = guest.run("boot")
    assert proc.returncode == 1
    assert "vault: permission denied" in proc.stderr
    assert f"the user hook {hook} exited with status 3" in proc.stderr


def test_sync_copies_the_installed_set_to_the_volume(guest, ca, client):
    guest.certs.mkdir(parents=True)
    for name, text in (("ca.crt", ca.cert_pem), ("client.crt", client.cert_pem),
                       ("client.key", client.key_pem)):
        (guest.certs / name).write_text(text)
    proc = guest.run("sync")
    assert proc.returncode == 0, proc.stderr
    assert guest.kept() == guest.installed()
    assert guest.run("sync").stdout == ""    # quiet when nothing changed


def test_check_names_the_reason(guest, ca, tmp_path):
    folder = tmp_path / "set"
    folder.mkdir()
    (folder / "ca.crt").write_text(pki.make_ca("Old CA", expired=True).cert_pem)
    proc = guest.run("check", str(folder))
    assert proc.returncode == 1
    assert proc.stderr.startswith(f"trove-certs: {folder}: ca.crt expired on ")
    (folder / "ca.crt").write_text(ca.cert_pem)
    proc = guest.run("check", str(folder))
    assert proc.returncode == 0 and "CA 'Test Trove CA'" in proc.stdout


def test_a_volume_that_cannot_take_the_copy_does_not_stop_the_agent(guest, ca, client):
    guest.volume.rmdir()
    guest.volume.write_text("not a folder")     # mkdir below it fails
    guest.deliver(ca, client)
    proc = guest.run("boot")
    assert proc.returncode == 0, proc.stderr
    assert "could not write the copy on the data volume" in proc.stdout
    assert guest.installed()["client.crt"] == client.cert_pem
