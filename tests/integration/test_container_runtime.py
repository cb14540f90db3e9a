"""runtime: container with a preloaded datastore image, built and booted
for real."""
import json

import pytest

from trove_image_builder.build import images

from tests.helpers.cli import cli

pytestmark = pytest.mark.integration


def test_manifest_records_the_preloaded_image(prod_mariadb_preloaded, small_image_layout,
                                              prod_mariadb):
    _layout, archive = small_image_layout
    m = prod_mariadb_preloaded.manifest
    [entry] = m["datastore"]["images"]
    assert entry["ref"] == "mariadb:10.11"
    # the OCI layout was converted; the ID is the one skopeo's own archive has
    assert entry["image_id"] == images.docker_archive_id(archive)
    assert entry["in_image"] is True
    assert "mariadb-server" not in m["packages"]
    assert "trove-preload-images.service" in m["services_enabled"]
    with_image = m["image"]["size_bytes"]
    without = prod_mariadb.manifest["image"]["size_bytes"]
    print(f"image size without a preloaded image: {without} bytes; with one "
          f"({entry['size_bytes']} byte archive): {with_image} bytes")
    assert with_image > without


def test_offline_verify_sees_the_preloaded_image(prod_mariadb_preloaded):
    proc = cli("verify", str(prod_mariadb_preloaded.path))
    assert proc.returncode == 0, proc.stderr
    name = prod_mariadb_preloaded.path.name
    for check in ("offline::test_container_engine", "offline::test_no_server_package_on_host",
                  "offline::test_preloaded_images", "offline::test_certificate_hook"):
        assert f"PASS {name}: {check}" in proc.stderr


def test_booted_engine_lists_the_image_and_the_agent_answers(prod_mariadb_preloaded):
    proc = cli("verify", str(prod_mariadb_preloaded.path), "--contract", timeout=2400)
    assert proc.returncode == 0, proc.stderr[-4000:]
    name = prod_mariadb_preloaded.path.name
    for check in ("booted::test_container_engine_active",
                  "booted::test_preloaded_images_listed_without_a_pull",
                  "booted::test_certificate_hook_ran",
                  "booted::test_contract_rpc_ping"):
        assert f"PASS {name}: {check}" in proc.stderr, proc.stderr[-4000:]
    print("booted verify seconds:", json.loads(proc.stdout)["seconds"])
