"""The certificate hook's data volume on real block devices (loop devices
here): found by label, mounted for a moment and released, a copy kept and
restored; a blank volume is left blank."""
import subprocess
import uuid

import pytest

from tests import pki
from tests.helpers.certs_hook import Guest

pytestmark = pytest.mark.integration


class DeviceGuest(Guest):
    def __init__(self, root, volume):
        super().__init__(root)
        self.device_volume = volume

    def env(self) -> dict:
        env = super().env()
        del env["TROVE_CERTS_VOLUME_ROOT"]
        env["TROVE_CERTS_VOLUME"] = self.device_volume
        return env


@pytest.fixture
def loop(tmp_path):
    """A loop device over a 64 MiB file; detached afterwards."""
    made = []

    def attach(label=None):
        backing = tmp_path / f"disk{len(made)}.raw"
        subprocess.run(["truncate", "-s", "64M", str(backing)], check=True)
        if label:
            subprocess.run(["mkfs.ext4", "-q", "-L", label, str(backing)], check=True)
        dev = subprocess.run(["losetup", "-f", "--show", str(backing)], check=True,
                             capture_output=True, text=True).stdout.strip()
        made.append(dev)
        return dev
    yield attach
    for dev in made:
        subprocess.run(["umount", dev], capture_output=True)
        subprocess.run(["losetup", "-d", dev], check=True)


def _mounted(dev) -> str:
    return subprocess.run(["findmnt", "-n", "--source", dev], capture_output=True,
                          text=True).stdout.strip()


def test_a_volume_found_by_label_keeps_and_restores_the_set(loop, tmp_path):
    label = f"tib-{uuid.uuid4().hex[:8]}"
    dev = loop(label)
    ca = pki.make_ca()
    client = pki.issue(ca, "guest agent")
    guest = DeviceGuest(tmp_path / "root", f"LABEL={label}")
    guest.deliver(ca, client)
    proc = guest.run("boot")
    assert proc.returncode == 0, proc.stderr
    assert "kept a copy on the data volume (.trove-certs)" in proc.stdout
    assert _mounted(dev) == "", "the hook left the volume mounted"
    assert list((tmp_path / "root" / "run").iterdir()) == []
    # a new root disk: restored from the volume
    installed = guest.installed()
    for path in guest.certs.iterdir():
        path.unlink()
    proc = guest.run("boot")
    assert proc.returncode == 0, proc.stderr
    assert "restored the certificates from the data volume" in proc.stdout
    assert guest.installed() == installed
    assert _mounted(dev) == ""


def test_sync_writes_only_to_a_volume_someone_mounted(loop, tmp_path):
    dev = loop(f"tib-{uuid.uuid4().hex[:8]}")
    ca = pki.make_ca()
    guest = DeviceGuest(tmp_path / "root", dev)
    guest.certs.mkdir(parents=True)
    (guest.certs / "ca.crt").write_text(ca.cert_pem)
    assert guest.run("sync").returncode == 0
    assert _mounted(dev) == "", "sync mounted the volume itself"
    mnt = tmp_path / "datastore"
    mnt.mkdir()
    subprocess.run(["mount", dev, str(mnt)], check=True)
    try:
        proc = guest.run("sync")
        assert proc.returncode == 0, proc.stderr
        assert (mnt / ".trove-certs" / "ca.crt").read_text() == ca.cert_pem
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


def test_a_blank_volume_is_left_blank(loop, tmp_path):
    dev = loop()
    ca = pki.make_ca()
    guest = DeviceGuest(tmp_path / "root", dev)
    guest.deliver(ca)
    proc = guest.run("boot")
    assert proc.returncode == 0, proc.stderr
    assert f"the data volume {dev} has no file system yet" in proc.stdout
    found = subprocess.run(["blkid", "-p", dev], capture_output=True, text=True)
    assert found.returncode == 2 and found.stdout == "", found.stdout
    assert guest.installed() == {"ca.crt": ca.cert_pem}
