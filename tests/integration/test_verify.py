"""verify on real images: offline, booted, the Trove contract, and an image
broken on purpose."""
import json
import shutil
import xml.etree.ElementTree as ET

import pytest

from trove_image_builder.plumbing import imagefs

from tests.helpers.cli import cli

pytestmark = pytest.mark.integration


def _junit_cases(path):
    return {case.get("name"): case for case in ET.parse(path).getroot().iter("testcase")}


def test_offline_verify_production_image(prod_mariadb, tmp_path):
    junit = tmp_path / "report.xml"
    proc = cli("verify", str(prod_mariadb.path), "--junit", str(junit))
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["failed"] == []
    assert result["passed"] >= 15
    assert "PASS prod-mariadb.qcow2: offline::test_no_private_keys" in proc.stderr
    assert "PASS prod-mariadb.qcow2: offline::test_guest_agent_unit" in proc.stderr
    cases = _junit_cases(junit)
    assert "test_no_passwords" in " ".join(cases)
    print("offline verify seconds:", result["seconds"])


def test_offline_verify_development_image(dev_mariadb):
    proc = cli("verify", str(dev_mariadb.path))
    assert proc.returncode == 0, proc.stderr
    assert "PASS dev-mariadb.qcow2: offline::test_dev_marker_and_key" in proc.stderr
    # the per-build key: private half next to the image, public half inside
    key = dev_mariadb.path.with_name("dev-mariadb.id_ed25519")
    assert key.is_file() and (key.stat().st_mode & 0o077) == 0
    manifest = dev_mariadb.manifest
    assert manifest["guest_agent"]["install"] == "source"
    assert manifest["guest_agent"]["version"] == "26.0.0"
    assert manifest["profile"]["variant"] == "development"


def test_development_image_fails_production_checks(dev_mariadb):
    """The production checks are real: a dev image (ssh key, marker) fails them."""
    proc = cli("verify", str(dev_mariadb.path), "--profile", "prod-mariadb")
    assert proc.returncode == 1
    assert "FAIL dev-mariadb.qcow2: offline::test_no_authorized_keys" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_broken_image_names_the_missing_unit(prod_mariadb, tmp_path):
    broken = tmp_path / "broken.qcow2"
    shutil.copy(prod_mariadb.path, broken)
    shutil.copy(prod_mariadb.path.with_name(prod_mariadb.path.name + ".manifest.json"),
                tmp_path / "broken.qcow2.manifest.json")
    with imagefs.mounted(broken, writable=True) as root:
        (root / "etc/systemd/system/guest-agent.service").unlink()
        (root / "etc/systemd/system/multi-user.target.wants/guest-agent.service").unlink()
    proc = cli("verify", str(broken))
    assert proc.returncode == 1, proc.stderr
    assert ("FAIL broken.qcow2: offline::test_guest_agent_unit: the guest agent unit "
            "/etc/systemd/system/guest-agent.service is missing") in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith(
        f"Error: 1 check(s) failed for {broken}: offline::test_guest_agent_unit")


def test_package_runtime_image_passes_the_offline_checks(mariadb_package):
    """Offline only: the booted checks of the package runtime (service
    running, query answered) run once per CI run, on the user datastore
    image (test_user_datastore.py), to keep CI's boots few."""
    proc = cli("verify", str(mariadb_package.path))
    assert proc.returncode == 0, proc.stderr[-4000:]
    for check in ("offline::test_datastore_package_installed",
                  "offline::test_datastore_service_enabled"):
        assert f"PASS mariadb-package.qcow2: {check}" in proc.stderr, proc.stderr[-4000:]
