"""What an image should hold: expect.load from the manifest beside a (fake)
image file, or from --profile; no image is opened."""
import json
from pathlib import Path

import pytest

from trove_image_builder.contract import expectations as expect
from trove_image_builder import profile as profiles
from trove_image_builder.errors import InputError

DEV_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFakeKeyForTheUnitTests trove-image-builder dev key"


@pytest.fixture
def image(tmp_path) -> Path:
    path = tmp_path / "img.qcow2"
    path.write_bytes(b"QFI\xfb not really an image")
    return path


@pytest.fixture
def manifest(image):
    """manifest(profile_name, sets, **extra) -> Path: the manifest a build of
    that profile writes next to the image (the parts expect.load reads)."""
    def _write(name="prod-mariadb", sets=(), **extra):
        data = {"schema": 1,
                "profile": {"name": name, "resolved": profiles.load(name, sets).to_dict()},
                "dev_ssh_key": None, **extra}
        path = expect.manifest_path(image)
        path.write_text(json.dumps(data, indent=2))
        return path
    return _write


def test_manifest_path_is_beside_the_image(tmp_path):
    assert expect.manifest_path(tmp_path / "a.qcow2") == tmp_path / "a.qcow2.manifest.json"


def test_load_from_the_manifest(image, manifest):
    manifest("prod-mariadb")
    exp = expect.load(image)
    assert exp.image == str(image)
    assert exp.profile == "prod-mariadb"
    assert (exp.distro, exp.release, exp.guest_user) == ("debian", "bookworm", "trove")
    assert exp.datastore == "mariadb"
    # the datastore runs in a container: an engine on the host OS, no server package
    assert exp.datastore_runtime == "container"
    assert exp.engine_package == "docker.io"
    assert exp.datastore_package is None
    assert exp.server_package == "mariadb-server"
    assert exp.datastore_version == "10.11"
    assert exp.datastore_service == "mariadb"
    assert "SELECT VERSION()" in exp.datastore_query
    assert exp.agent_install == "release"
    assert exp.agent_version == "26.0.0"
    assert exp.production is True
    assert exp.dev_public_key is None
    assert exp.cert_hook is True and exp.cert_user_hook is False


def test_load_a_package_runtime_manifest(image, manifest):
    manifest("mariadb-package")
    exp = expect.load(image)
    assert exp.profile == "mariadb-package"
    assert exp.datastore_runtime == "package"
    assert exp.datastore_package == "mariadb-server"
    assert exp.server_package == "mariadb-server"
    assert exp.engine_package is None
    assert exp.datastore_service == "mariadb"
    assert exp.agent_install == "none"
    assert exp.agent_version is None
    assert exp.production is True


def test_load_postgresql_names_the_versioned_package(image, manifest):
    manifest("prod-postgresql")
    exp = expect.load(image)
    assert exp.datastore == "postgresql"
    assert exp.server_package == "postgresql-15"
    assert exp.datastore_package is None
    assert exp.datastore_service == "postgresql"
    assert exp.datastore_version == "15"


def test_load_postgresql_from_packages(image, manifest):
    manifest("prod-postgresql", ("datastore.runtime=package", "guest_agent.install=none"))
    exp = expect.load(image)
    assert exp.datastore_runtime == "package"
    assert exp.datastore_package == "postgresql-15"
    assert exp.engine_package is None


def test_load_a_development_manifest(image, manifest):
    manifest("dev-mariadb")
    exp = expect.load(image)
    assert exp.production is False
    assert exp.variant == "development"
    assert exp.agent_install == "source"
    # only a release install has a version to check
    assert exp.agent_version is None
    assert exp.server_package == "mariadb-server"
    assert exp.cert_hook is False


def test_profile_option_overrides_the_manifest(image, manifest):
    manifest("prod-mariadb")
    exp = expect.load(image, "prod-postgresql")
    assert exp.profile == "prod-postgresql"
    assert exp.server_package == "postgresql-15"
    assert exp.datastore_service == "postgresql"


def test_agent_version_only_for_a_release_install(image):
    """A source install runs whatever the checkout holds: no version to check."""
    exp = expect.load(image, "dev-mariadb", ("guest_agent.version=25.0.0",))
    assert exp.agent_install == "source"
    assert exp.agent_version is None


def test_profile_option_without_a_manifest(image):
    assert not expect.manifest_path(image).exists()
    exp = expect.load(image, "prod-mariadb")
    assert exp.profile == "prod-mariadb"
    assert exp.server_package == "mariadb-server"
    assert exp.agent_version == "26.0.0"


def test_profile_option_takes_the_sets(image):
    exp = expect.load(image, "prod-mariadb", ("trove_version=25.0.0",))
    assert exp.agent_version == "25.0.0"


def test_dev_key_read_from_the_pub_file_beside_the_manifests_key(image, manifest, tmp_path):
    key = tmp_path / "keys" / "dev-mariadb.key"
    key.parent.mkdir()
    key.write_text("-----BEGIN OPENSSH PRIVATE KEY-----\nnot read\n")
    key.with_name(key.name + ".pub").write_text(DEV_KEY + "\n")
    manifest("dev-mariadb", dev_ssh_key=str(key))
    assert expect.load(image).dev_public_key == DEV_KEY


def test_dev_key_also_with_the_profile_option(image, manifest, tmp_path):
    key = tmp_path / "dev.key"
    key.with_name("dev.key.pub").write_text(DEV_KEY + "\n")
    manifest("dev-mariadb", dev_ssh_key=str(key))
    exp = expect.load(image, "dev-mariadb")
    assert exp.dev_public_key == DEV_KEY


def test_dev_key_missing_pub_file_is_no_key(image, manifest, tmp_path):
    manifest("dev-mariadb", dev_ssh_key=str(tmp_path / "gone.key"))
    assert expect.load(image).dev_public_key is None


def test_to_dict_has_every_field(image, manifest):
    manifest("prod-mariadb")
    data = expect.load(image).to_dict()
    assert data["server_package"] == "mariadb-server"
    assert data["agent_version"] == "26.0.0"
    assert set(data) == set(expect.Expectations.__dataclass_fields__)


# --------------------------------------------------------------------------
# errors: InputError (exit code 2) with a message naming the file

def test_missing_image(tmp_path):
    missing = tmp_path / "nope.qcow2"
    with pytest.raises(InputError) as err:
        expect.load(missing)
    assert err.value.message == f"{missing}: no such image file"
    assert err.value.exit_code == 2


def test_missing_image_even_with_a_profile(tmp_path):
    missing = tmp_path / "nope.qcow2"
    with pytest.raises(InputError, match="no such image file"):
        expect.load(missing, "prod-mariadb")


def test_a_directory_is_not_an_image(tmp_path):
    with pytest.raises(InputError, match="no such image file"):
        expect.load(tmp_path)


def test_no_manifest_and_no_profile(image):
    with pytest.raises(InputError) as err:
        expect.load(image)
    assert err.value.message == (
        f"{image}: no manifest (img.qcow2.manifest.json) next to it; "
        "name the profile it was built from with --profile")


def test_manifest_not_json(image):
    path = expect.manifest_path(image)
    path.write_text("{not json")
    with pytest.raises(InputError) as err:
        expect.load(image)
    assert err.value.message.startswith(f"{path}: not valid JSON (")


def test_manifest_not_json_even_with_a_profile(image):
    """The manifest is read for the dev key either way."""
    expect.manifest_path(image).write_text("{not json")
    with pytest.raises(InputError, match="not valid JSON"):
        expect.load(image, "prod-mariadb")


@pytest.mark.parametrize("data", [{}, {"profile": None}, {"profile": {"name": "x"}}])
def test_manifest_without_a_resolved_profile(image, data):
    path = expect.manifest_path(image)
    path.write_text(json.dumps(data))
    with pytest.raises(InputError) as err:
        expect.load(image)
    assert err.value.message.startswith(f"{path}: no resolved profile in the manifest")


def test_manifest_with_an_invalid_resolved_profile(image, manifest):
    path = manifest("prod-mariadb")
    data = json.loads(path.read_text())
    data["profile"]["resolved"]["colour"] = "blue"
    path.write_text(json.dumps(data))
    with pytest.raises(InputError) as err:
        expect.load(image)
    assert err.value.message.startswith(f"{path}: colour: unknown key")


@pytest.mark.parametrize("text", ["[1]", '"text"', '{"dev_ssh_key": 5, "profile": {}}'])
def test_manifest_of_the_wrong_shape_is_an_input_error(image, text):
    expect.manifest_path(image).write_text(text)
    with pytest.raises(InputError):
        expect.load(image)
