"""Every shipped profile, from `profiles matrix --json` (what a CI system
fans out on): each one renders and dry-runs here, with every check a real
build makes before it starts.

The profiles CI does not build in full are built, verified offline and
booted by ``test_builds_and_verifies`` below, marked ``extended`` (beyond
CI's time budget). Run them with:

    .venv/bin/python -m pytest -m extended -v tests/integration/test_shipped_profiles.py

or one profile with ``-k dev-postgresql``.
"""
import json

import pytest

from tests.helpers.cli import REPO, cli

pytestmark = pytest.mark.integration

# Built, verified offline and booted (with the prepare exchange when they
# have an agent) by CI's own fixtures (tests/integration/conftest.py).
BUILT_IN_CI = {"prod-mariadb", "dev-mariadb", "mariadb-package", "prod-postgresql",
               "prod-mysql-noble"}


# the shipped profiles' files, read at collection without running anything
SHIPPED = sorted(p.stem for p in (REPO / "profiles").glob("*.yaml"))


@pytest.fixture(scope="module")
def matrix() -> dict:
    proc = cli("profiles", "matrix", "--json", timeout=300)
    assert proc.returncode == 0, proc.stderr
    return {entry["name"]: entry for entry in json.loads(proc.stdout)}


def _source_args(entry, trove_checkout) -> list:
    """Development profiles take their agent from a Trove tree."""
    return ["--set", f"trove_source={trove_checkout}"] \
        if entry["variant"] == "development" else []


def test_the_matrix_names_every_shipped_profile(matrix):
    assert sorted(matrix) == SHIPPED
    assert BUILT_IN_CI <= set(matrix), BUILT_IN_CI - set(matrix)
    assert {e["os"]["distro"] for e in matrix.values()} >= {"debian", "ubuntu"}


@pytest.mark.parametrize("name", SHIPPED)
def test_renders_and_dry_runs(name, matrix, trove_checkout, tmp_path):
    shown = cli("profiles", "show", name, *_source_args(matrix[name], trove_checkout),
                timeout=300)
    assert shown.returncode == 0, shown.stderr
    proc = cli("build", name, "-o", str(tmp_path / f"{name}.qcow2"), "--dry-run",
               *_source_args(matrix[name], trove_checkout), timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert not (tmp_path / f"{name}.qcow2").exists()


@pytest.mark.extended
@pytest.mark.parametrize("name", sorted(set(SHIPPED) - BUILT_IN_CI))
def test_builds_and_verifies(name, matrix, trove_checkout, tmp_path):
    """The real build of a profile CI does not build, then verify: offline,
    then booted, with Trove's prepare when the image has an agent and a
    datastore."""
    entry = matrix[name]
    image = tmp_path / f"{name}.qcow2"
    built = cli("build", name, "-o", str(image), *_source_args(entry, trove_checkout))
    assert built.returncode == 0, built.stderr[-3000:]
    offline = cli("verify", str(image))
    assert offline.returncode == 0, offline.stderr[-3000:]
    manifest = json.loads(image.with_name(image.name + ".manifest.json").read_text())
    agent = manifest["guest_agent"] is not None
    booted = "--prepare" if agent and entry["datastore"] else "--boot"
    proc = cli("verify", str(image), booted)
    assert proc.returncode == 0, proc.stderr[-3000:]
