"""A datastore element that is not shipped (the tests' own redis element,
given with --elements-path) is built into a real image and verified, offline
and booted, from the image's manifest alone."""
import json

import pytest

from tests.helpers.cli import cli

pytestmark = pytest.mark.integration


def test_the_manifest_records_the_users_datastore(redis_package):
    manifest = redis_package.manifest
    contract = manifest["contract"]
    assert (contract["datastore"], contract["datastore_manager"]) == ("redis", "redis")
    assert (contract["server_package"], contract["datastore_service"]) == \
        ("redis-server", "redis-server")
    assert manifest["datastore"]["package_version"], manifest["datastore"]
    assert any(p.endswith("data/elements") for p in manifest["elements_path"])


def test_verify_offline_and_booted_without_the_element_at_hand(redis_package):
    """No --elements-path, no --profile: the manifest says what to expect."""
    proc = cli("verify", str(redis_package.path), "--boot", timeout=2400)
    assert proc.returncode == 0, proc.stderr[-4000:]
    for check in ("offline::test_datastore_package_installed",
                  "offline::test_datastore_service_enabled",
                  "booted::test_datastore_service_running",
                  "booted::test_datastore_answers_a_query"):
        assert f"PASS redis-package.qcow2: {check}" in proc.stderr, proc.stderr[-4000:]
    assert json.loads(proc.stdout)["failed"] == []


def test_the_profile_alone_does_not_know_the_datastore(redis_package):
    """Without the element folder, the profile is refused (the element is the
    definition); the image itself still verifies from its manifest (above)."""
    proc = cli("verify", str(redis_package.path), "--profile",
               "tests/integration/data/redis-package.yaml")
    assert proc.returncode == 2
    assert "unknown datastore 'redis'" in proc.stderr
