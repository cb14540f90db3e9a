"""build.stage: staged, publish and build through a fake backend registered
in the real registry (nothing is mounted): the atomic publish, and nothing
left at the output path or beside it when a build fails."""
import json

import pytest

from trove_image_builder import profile as profiles
from trove_image_builder.build import stage
from trove_image_builder.contract.expectations import from_manifest
from trove_image_builder.errors import BuildError

from tests.helpers.fake_backend import fake_backend


@pytest.fixture
def fake(monkeypatch):
    with fake_backend(monkeypatch) as backend:
        yield backend


def prod():
    return profiles.load("prod-mariadb")


def leftovers(folder):
    return sorted(p.name for p in folder.iterdir())


def test_build_publishes_the_image_with_its_manifest_and_checksum(fake, tmp_path):
    out = tmp_path / "x.qcow2"
    image, manifest = stage.build(prod(), out, backend_name="fake")
    assert image == out and out.read_bytes() == b"QFI\xfb a fake image"
    assert leftovers(tmp_path) == ["x.qcow2", "x.qcow2.log", "x.qcow2.manifest.json",
                                   "x.qcow2.sha256"]
    written = json.loads((tmp_path / "x.qcow2.manifest.json").read_text())
    assert written == manifest
    assert manifest["schema"] == 2 and manifest["backend"] == "fake"
    digest = manifest["image"]["sha256"]
    assert (tmp_path / "x.qcow2.sha256").read_text() == f"{digest}  x.qcow2\n"
    # the staging folder beside the output is gone
    assert not list(tmp_path.glob(".x.qcow2.*"))


def test_the_manifest_carries_the_contract_the_checks_read(fake, tmp_path):
    _, manifest = stage.build(prod(), tmp_path / "x.qcow2", backend_name="fake")
    exp = from_manifest(tmp_path / "x.qcow2", manifest)
    assert (exp.profile, exp.datastore, exp.datastore_manager) == \
        ("prod-mariadb", "mariadb", "mariadb")
    assert exp.server_package == "mariadb-server" and exp.datastore_package is None
    assert exp.agent_version == "26.0.0" and exp.cert_hook is True
    assert exp.paths.agent_venv == "/opt/guest-agent-venv"


@pytest.mark.parametrize("failure", [BuildError("the backend failed"), KeyboardInterrupt()])
def test_a_failed_or_interrupted_build_leaves_nothing_at_the_output(fake, tmp_path, failure):
    fake.fail = failure
    with pytest.raises(type(failure)):
        stage.build(prod(), tmp_path / "x.qcow2", backend_name="fake")
    # the log is kept for the user; no image, manifest, checksum or staging folder
    assert leftovers(tmp_path) == ["x.qcow2.log"]


def test_an_image_that_lacks_what_the_profile_asks_for_is_not_published(monkeypatch, tmp_path):
    contents = {"guest_agent": {"venv": None, "version": None},
                "certificates": {"hook": True}, "datastore": None}
    with fake_backend(monkeypatch, contents):
        with pytest.raises(BuildError, match="no guest agent"):
            stage.build(prod(), tmp_path / "x.qcow2", backend_name="fake")
    assert leftovers(tmp_path) == ["x.qcow2.log"]


def test_staged_without_publish_discards_the_image(fake, tmp_path):
    with stage.staged(prod(), tmp_path / "x.qcow2", backend_name="fake") as st:
        assert st.image.is_file() and st.image.parent == st.workdir
        assert st.workdir.parent == tmp_path
    assert leftovers(tmp_path) == ["x.qcow2.log"]


def test_a_development_build_publishes_its_key_beside_the_image(fake, tmp_path):
    source = tmp_path / "trove"
    source.mkdir()
    (source / "setup.cfg").write_text("[metadata]\nname = trove\n")
    prof = profiles.load("dev-mariadb", [f"guest_agent.path={source}"])
    _, manifest = stage.build(prof, tmp_path / "d.qcow2", backend_name="fake")
    pub = (tmp_path / "d.id_ed25519.pub").read_text().strip()
    assert (tmp_path / "d.id_ed25519").is_file()
    assert manifest["contract"]["dev_public_key"] == pub
    assert fake.seen[0]["plan"].env["TROVE_DEV_SSH_PUBKEY"] == pub


def test_the_datastore_image_is_built_first_and_preloaded(fake, tmp_path):
    """datastore.image: built: the build makes (here: the quick tests' fake,
    tests/unit/conftest.py) the image the agent runs, and lists it for the
    container-engine element; the contract expects it in the engine."""
    _, manifest = stage.build(prod(), tmp_path / "x.qcow2", backend_name="fake")
    [plan] = [seen["plan"] for seen in fake.seen]
    listing = plan.env["TROVE_CONTAINER_IMAGES_LIST"]
    assert listing.endswith("container-images.list")
    exp = from_manifest(tmp_path / "x.qcow2", manifest)
    [(ref, image_id)] = exp.images
    assert ref == "mariadb:11.8" and image_id.startswith("sha256:")
    assert manifest["timings"]["datastore-image"] >= 0


def test_pull_builds_no_datastore_image(fake, tmp_path):
    prof = profiles.load("prod-mariadb", ["datastore.image=pull"])
    _, manifest = stage.build(prof, tmp_path / "x.qcow2", backend_name="fake")
    [plan] = [seen["plan"] for seen in fake.seen]
    assert "TROVE_CONTAINER_IMAGES_LIST" not in plan.env
    assert from_manifest(tmp_path / "x.qcow2", manifest).images == ()
    assert "datastore-image" not in manifest["timings"]
