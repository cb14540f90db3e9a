"""What an image should hold: contract.expectations reads the manifest
beside a (fake) image file; nothing is opened, and neither the current
elements nor the profile defaults are consulted."""
import json
from pathlib import Path

import pytest

from tests.helpers import manifests
from trove_image_builder.contract import expectations as expect, paths
from trove_image_builder.errors import InputError

DEV_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFakeKeyForTheUnitTests trove-image-builder dev key"


@pytest.fixture
def image(tmp_path) -> Path:
    path = tmp_path / "img.qcow2"
    path.write_bytes(b"QFI\xfb not really an image")
    return path


def write(image, data) -> Path:
    path = expect.manifest_path(image)
    path.write_text(json.dumps(data, indent=2))
    return path


def test_manifest_path_is_beside_the_image(tmp_path):
    assert expect.manifest_path(tmp_path / "a.qcow2") == tmp_path / "a.qcow2.manifest.json"


def test_load_from_the_contract(image):
    manifests.write(image, "prod-mariadb")
    exp = expect.load(image)
    assert exp.image == str(image)
    assert exp.profile == "prod-mariadb"
    assert (exp.distro, exp.release, exp.guest_user) == ("debian", "trixie", "trove")
    assert (exp.datastore, exp.datastore_manager) == ("mariadb", "mariadb")
    # the datastore runs in a container: an engine on the host OS, no server package
    assert exp.datastore_runtime == "container"
    assert exp.engine_package == "docker.io"
    assert exp.datastore_package is None
    assert exp.server_package == "mariadb-server"
    assert exp.datastore_version == "11.8"
    assert "SELECT VERSION()" in exp.datastore_query
    assert (exp.agent_install, exp.agent_version) == ("release", "26.0.0")
    assert exp.production is True
    assert exp.dev_public_key is None
    assert (exp.cert_hook, exp.cert_user_hook, exp.cert_volume) == (True, False, "/dev/vdb")
    assert exp.paths == paths.current()


def test_a_package_runtime_contract(image):
    manifests.write(image, "mariadb-package")
    exp = expect.load(image)
    assert exp.datastore_runtime == "package"
    assert exp.datastore_package == exp.server_package == "mariadb-server"
    assert exp.engine_package is None
    assert exp.datastore_service == "mariadb"
    assert (exp.agent_install, exp.agent_version) == ("none", None)


def test_the_contract_round_trips(image):
    exp = manifests.contract("prod-postgresql", images=[("postgres:15", "sha256:ab")],
                             image=str(image))
    data = exp.to_dict()
    assert "image" not in data and data["schema"] == expect.SCHEMA
    again = expect.Expectations.from_dict(json.loads(json.dumps(data)), "m", str(image))
    assert again == exp
    assert again.images == (("postgres:15", "sha256:ab"),)


def test_a_datastore_no_shipped_element_knows_is_taken_from_the_manifest(image):
    """An image built with a user's datastore element verifies against what
    its manifest says, with no element folder at hand."""
    data = manifests.manifest("mariadb-package")
    data["contract"].update(datastore="redis", datastore_manager="redis",
                            datastore_version="7.0", server_package="redis-server",
                            datastore_service="redis-server",
                            datastore_query="redis-cli INFO server")
    write(image, data)
    exp = expect.load(image)
    assert (exp.datastore, exp.datastore_package, exp.datastore_service) == \
        ("redis", "redis-server", "redis-server")


def test_in_image_paths_come_from_the_manifest(image):
    data = manifests.manifest("prod-mariadb")
    data["contract"]["paths"]["agent_venv"] = "/opt/older-agent-venv"
    write(image, data)
    assert expect.load(image).paths.agent_venv == "/opt/older-agent-venv"


# A manifest written before the contract section (schema 1): what it recorded.
SCHEMA_1 = {
    "schema": 1,
    "profile": {"name": "old-redis", "resolved": {
        "name": "old-redis", "variant": "development", "guest_user": "dbadmin",
        "os": {"distro": "debian", "release": None, "mirror": None},
        "guest_agent": {"install": "none", "version": None, "path": None},
        "certificates": {"enabled": None, "volume": "/dev/vdb", "user_hook": None}}},
    "os": {"distro": "debian", "release": "bookworm"},
    "datastore": {"name": "redis", "version": "7.0", "runtime": "package",
                  "package": "redis-server", "service": "redis-server", "images": []},
    "certificates": {"hook": False, "volume": None, "user_hook": False},
}


def test_a_schema_1_manifest_verifies_against_what_it_recorded(image, tmp_path):
    key = tmp_path / "old.id_ed25519"
    (tmp_path / "old.id_ed25519.pub").write_text(DEV_KEY + "\n")
    write(image, {**SCHEMA_1, "dev_ssh_key": str(key)})
    exp = expect.load(image)
    assert (exp.profile, exp.variant, exp.guest_user) == ("old-redis", "development", "dbadmin")
    assert exp.release == "bookworm"         # the unresolved default, read from 'os'
    assert (exp.datastore, exp.datastore_package, exp.datastore_service) == \
        ("redis", "redis-server", "redis-server")
    assert exp.datastore_query is None       # not recorded then: that check is skipped
    assert exp.cert_hook is False
    assert exp.dev_public_key == DEV_KEY


def test_a_schema_1_container_manifest(image):
    data = json.loads(json.dumps(SCHEMA_1))
    data["datastore"].update(runtime="container", package="docker.io", service="docker")
    write(image, data)
    exp = expect.load(image)
    assert (exp.engine_package, exp.server_package, exp.datastore_service) == \
        ("docker.io", None, None)


def test_missing_image(tmp_path):
    missing = tmp_path / "nope.qcow2"
    with pytest.raises(InputError, match=f"^{missing}: no such image file$"):
        expect.load(missing)


def test_a_directory_is_not_an_image(tmp_path):
    with pytest.raises(InputError, match="no such image file"):
        expect.load(tmp_path)


def test_no_manifest(image):
    with pytest.raises(InputError) as err:
        expect.load(image)
    assert err.value.message == (f"{image}: no manifest (img.qcow2.manifest.json) next to it; "
                                 "name the profile it was built from with --profile")


def test_manifest_not_json(image):
    expect.manifest_path(image).write_text("{oops")
    with pytest.raises(InputError, match="not valid JSON"):
        expect.load(image)


@pytest.mark.parametrize("text", ["[]", "3", '"x"'])
def test_manifest_of_the_wrong_shape_is_an_input_error(image, text):
    expect.manifest_path(image).write_text(text)
    with pytest.raises(InputError, match="not a manifest"):
        expect.load(image)


def test_manifest_without_contract_or_profile(image):
    write(image, {"schema": 1})
    with pytest.raises(InputError, match="no resolved profile in the manifest"):
        expect.load(image)


def test_contract_with_an_unknown_key(image):
    data = manifests.manifest("prod-mariadb")
    data["contract"]["flux"] = 1
    write(image, data)
    with pytest.raises(InputError, match="contract: unknown key.s. flux; written by a newer"):
        expect.load(image)


def test_contract_missing_a_key(image):
    data = manifests.manifest("prod-mariadb")
    del data["contract"]["guest_user"]
    write(image, data)
    with pytest.raises(InputError, match="contract: missing guest_user"):
        expect.load(image)


def test_contract_paths_incomplete(image):
    data = manifests.manifest("prod-mariadb")
    del data["contract"]["paths"]["certs"]
    write(image, data)
    with pytest.raises(InputError, match="contract.paths must name exactly"):
        expect.load(image)
