"""runtime: container: the datastore image built here and preloaded into
the real production image, and a preloaded image given as an OCI layout."""
import pytest

from trove_image_builder.build import images

from tests.helpers.cli import cli

pytestmark = pytest.mark.integration


def test_manifest_records_the_built_datastore_image(prod_mariadb, mariadb_image):
    m = prod_mariadb.manifest
    assert m["datastore"]["image"] == {"ref": "mariadb:11.8", "source": "built"}
    [entry] = m["datastore"]["images"]
    assert entry["ref"] == "mariadb:11.8"
    assert entry["source"] == "built"
    assert entry["image_id"] == mariadb_image.image_id
    assert entry["image_id"] == images.docker_archive_id(mariadb_image.archive)
    assert entry["in_image"] is True
    # the exact Debian trixie packages inside the container image
    assert entry["packages"]["mariadb-server"].split(":")[-1].startswith("11.8")
    assert entry["packages"] == mariadb_image.packages
    # on the host OS: the engine, not the server
    assert "mariadb-server" not in m["packages"]
    assert "trove-preload-images.service" in m["services_enabled"]
    print(f"prod-mariadb: {m['image']['size_bytes']} bytes with the "
          f"{entry['size_bytes']} byte mariadb:11.8 archive")


def test_offline_verify_sees_the_preloaded_image(prod_mariadb):
    proc = cli("verify", str(prod_mariadb.path))
    assert proc.returncode == 0, proc.stderr
    name = prod_mariadb.path.name
    for check in ("offline::test_container_engine", "offline::test_no_server_package_on_host",
                  "offline::test_preloaded_images", "offline::test_certificate_hook"):
        assert f"PASS {name}: {check}" in proc.stderr


def test_an_oci_layout_is_converted_for_the_engine(small_image_layout, tmp_path):
    """A preloaded image given as an OCI layout (datastore.images): skopeo
    turns it into the docker-archive the guest's engine loads, with the same
    image ID as skopeo's own docker-archive of it."""
    layout, archive = small_image_layout

    class Given:
        ref = "tools:1.0"

    Given.archive = str(layout)
    [prepared] = images.prepare([Given], tmp_path, "test")
    assert prepared.ref == "tools:1.0"
    assert prepared.archive.suffix == ".tar"
    assert prepared.image_id == images.docker_archive_id(archive)
