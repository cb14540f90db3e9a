"""Shared fixtures for the unit tests: fast, no root, no network."""
from pathlib import Path
import textwrap

import pytest

from tests import pki
from trove_image_builder import elements, shipped_dir


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
