"""publish against a real Glance (tests/helpers/glance.py: glance from
PyPI served by uWSGI, file store, no Keystone), with the real prod-mariadb
image, through the real command line in a subprocess."""
import json
import shutil
import time

import pytest

from tests.helpers.cli import cli
from tests.helpers.glance import Glance
from trove_image_builder.release import glance as publishing, manifests

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def glance():
    with Glance() as server:
        yield server


@pytest.fixture(scope="module")
def hashes(prod_mariadb) -> dict:
    return publishing.file_hashes(prod_mariadb.path)


def publish(*args, env, capsys, label):
    start = time.monotonic()
    proc = cli("publish", *args, env=env, timeout=600)
    took = time.monotonic() - start
    with capsys.disabled():            # in the CI log, whatever the capture
        print(f"\n[publish] {label}: {took:.1f} s", flush=True)
    return proc, took


def images_with(conn, os_hash_value):
    return [i for i in conn.image.images() if i.hash_value == os_hash_value]


def test_publish_uploads_the_image_with_its_properties_and_tags(
        glance, prod_mariadb, hashes, capsys):
    with capsys.disabled():
        print(f"\n[publish] glance venv {glance.timings['venv']} s, "
              f"start {glance.timings['start']} s", flush=True)
    proc, _ = publish(str(prod_mariadb.path), "--owner", "trove-service-project",
                      env=glance.env(), capsys=capsys, label="upload of "
                      f"{prod_mariadb.path.stat().st_size >> 20} MiB (OS_* variables)")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "upload: 100% " in proc.stderr
    out = json.loads(proc.stdout)
    assert out["reused"] is False

    image = glance.connect().image.get_image(out["id"])
    assert image.status == "active"
    assert image.checksum == hashes["md5"] == out["checksum"]
    assert (image.hash_algo, image.hash_value) == ("sha512", hashes["sha512"])
    assert image.size == prod_mariadb.path.stat().st_size
    assert (image.disk_format, image.container_format) == ("qcow2", "bare")
    assert (image.visibility, image.owner) == ("private", "trove-service-project")
    assert sorted(image.tags) == ["mariadb", "mariadb-11.8", "trove"]
    m = prod_mariadb.manifest
    digest = manifests.manifest_digest(prod_mariadb.path, m)
    props = {**image.properties, "os_distro": image.os_distro,
             "os_version": image.os_version, "hw_rng_model": image.hw_rng_model}
    assert {k: props.get(k) for k in out["properties"]} == out["properties"] == {
        "os_distro": "debian", "os_version": m["os"]["os_release"]["VERSION_ID"],
        "hw_rng_model": "virtio", "trove_datastore": "mariadb",
        "trove_datastore_version": m["datastore"]["version"],
        "trove_datastore_manager": "mariadb",
        "trove_guest_agent_version": m["guest_agent"]["version"],
        "trove_image_builder_version": m["tools"]["trove-image-builder"],
        "trove_image_builder_profile": "prod-mariadb",
        "trove_image_builder_variant": "production",
        "trove_image_builder_manifest_digest": digest}
    assert image.name == out["name"] == f"prod-mariadb-{digest[7:19]}"


def test_trove_finds_the_image_by_its_tags(glance, prod_mariadb, hashes):
    """The query Trove 26.0.0 makes for a datastore version with image tags
    and no image id (trove/common/glance.py get_image_id)."""
    found = list(glance.connect().image.images(tag=["trove", "mariadb", "mariadb-11.8"],
                                               status="active", sort="created_at:desc",
                                               limit=1))
    assert [i.hash_value for i in found] == [hashes["sha512"]]


def test_publishing_again_reuses_the_image(glance, prod_mariadb, hashes, capsys, tmp_path):
    """The second time through a clouds.yaml and --os-cloud."""
    clouds = tmp_path / "clouds.yaml"
    clouds.write_text(f"clouds:\n  test-glance:\n    auth_type: none\n"
                      f"    image_endpoint_override: {glance.url}\n")
    env = {k: v for k, v in glance.env().items() if not k.startswith("OS_")}
    env["OS_CLIENT_CONFIG_FILE"] = str(clouds)
    proc, took = publish(str(prod_mariadb.path), "--os-cloud", "test-glance",
                         "--owner", "trove-service-project",
                         env=env, capsys=capsys, label="re-publish (clouds.yaml)")
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout)
    assert (out["reused"], out["updated"]) == (True, [])
    assert "upload:" not in proc.stderr
    assert len(images_with(glance.connect(), hashes["sha512"])) == 1


def test_an_image_failing_its_checksum_is_refused_and_nothing_uploaded(
        glance, prod_mariadb, tmp_path):
    """A truncated copy (1 MiB) beside the image's own manifest."""
    copy = tmp_path / prod_mariadb.path.name
    with open(prod_mariadb.path, "rb") as src, open(copy, "wb") as dst:
        dst.write(src.read(1 << 20))
    manifest = prod_mariadb.path.with_name(prod_mariadb.path.name + manifests.SUFFIX)
    shutil.copy(manifest, copy.with_name(manifest.name))
    before = [i.id for i in glance.connect().image.images()]
    proc = cli("publish", str(copy), env=glance.env(), timeout=120)
    assert proc.returncode == 1
    last = proc.stderr.splitlines()[-1]
    assert last.startswith(f"Error: {copy}: sha256 ") and "nothing uploaded" in last
    assert "Traceback" not in proc.stderr and proc.stdout == ""
    assert [i.id for i in glance.connect().image.images()] == before


def test_glance_stopped_is_one_line_and_a_failure(glance, prod_mariadb):
    """Last: stops the module's Glance."""
    env = glance.env()
    glance.stop()
    proc = cli("publish", str(prod_mariadb.path), env=env, timeout=120)
    assert proc.returncode == 1
    assert proc.stderr.splitlines()[-1] == \
        f"Error: Glance unreachable at {glance.url}: no answer to version discovery"
    assert "Traceback" not in proc.stderr and proc.stdout == ""
