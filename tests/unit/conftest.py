"""Shared fixtures for the unit tests: fast, no root, no network."""
from pathlib import Path
import textwrap

import pytest

from tests import pki
from trove_image_builder import elements, shipped_dir


@pytest.fixture(autouse=True)
def no_datastore_image_builds(monkeypatch, tmp_path_factory):
    """A build's datastore image (datastore.image: built) is a small
    docker-archive made here, not a Debian root file system: quick tests
    never run mmdebstrap, whatever the cache holds."""
    import tarfile
    from trove_image_builder.build import stage
    from trove_image_builder.plumbing.runner import sha256_of
    from trove_image_builder.build.datastore_image import DatastoreImage, archive as writer

    def fake_build(ref, cache=None, **_options):
        where = tmp_path_factory.mktemp("datastore-image")
        layer = where / "layer.tar"
        with tarfile.open(layer, "w"):
            pass
        archive = where / "image.tar"
        image_id = writer.write(layer, ref, {"Cmd": ["true"]}, archive,
                                architecture="amd64", created_by="test")
        return DatastoreImage(ref=ref, archive=archive, image_id=image_id,
                              size_bytes=archive.stat().st_size,
                              packages={"fake-server": "1.0"}, inputs_hash="fake",
                              archive_sha256=sha256_of(archive))
    monkeypatch.setattr(stage, "build_datastore_image", fake_build)


@pytest.fixture(scope="session")
def known():
    """Every element: the shipped ones and diskimage-builder's."""
    return elements.discover()


@pytest.fixture(scope="session")
def shipped_elements_dir() -> Path:
    return shipped_dir("elements")


@pytest.fixture(scope="session")
def shipped_profiles_dir() -> Path:
    return shipped_dir("profiles")


@pytest.fixture
def write(tmp_path, monkeypatch):
    """write(name, yaml_text) -> Path: a profile file in tmp_path.

    The working directory is tmp_path, so the file names in error messages
    are the bare names given here (e.g. ``a.yaml: os.foo: ...``).
    """
    monkeypatch.chdir(tmp_path)

    def _write(name: str, text: str) -> Path:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip("\n"))
        return path

    return _write


@pytest.fixture(scope="module")
def ca():
    """A CA made at test time (tests/pki.py)."""
    return pki.make_ca()


@pytest.fixture(scope="module")
def client(ca):
    """The guest agent's client certificate, signed by ca."""
    return pki.issue(ca, "guest agent")
