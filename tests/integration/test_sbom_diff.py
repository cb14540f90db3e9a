"""sbom and diff on real built images (prod-mariadb, mariadb-package)."""
import hashlib
import json

import pytest
from cyclonedx.schema import SchemaVersion
from cyclonedx.validation.json import JsonStrictValidator

from tests.helpers.cli import cli

pytestmark = pytest.mark.integration


def file_hashes(path):
    """Computed here, not by the code under test."""
    with open(path, "rb") as f:
        sha256 = hashlib.file_digest(f, "sha256").hexdigest()
    with open(path, "rb") as f:
        return sha256, hashlib.file_digest(f, "sha512").hexdigest()


def test_sbom_of_a_real_image(prod_mariadb, tmp_path):
    out = tmp_path / "prod-mariadb.cdx.json"
    proc = cli("sbom", str(prod_mariadb.path), "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    text = out.read_text()
    # validated here too, independently of the command
    assert JsonStrictValidator(SchemaVersion.V1_7).validate_str(text) is None
    doc = json.loads(text)
    m = prod_mariadb.manifest
    sha256, sha512 = file_hashes(prod_mariadb.path)
    assert doc["metadata"]["component"]["hashes"] == [
        {"alg": "SHA-256", "content": sha256}, {"alg": "SHA-512", "content": sha512}]
    comps = doc["components"]
    debs = [c for c in comps if c.get("purl", "").startswith("pkg:deb/debian/")]
    pys = [c for c in comps if c.get("purl", "").startswith("pkg:pypi/")]
    containers = [c for c in comps if c["type"] == "container"]
    assert len(debs) == len(m["packages"])
    pruned = set(m["guest_agent"]["pruned_packages"])
    assert "pip" in pruned        # a production image's agent venv is pruned
    assert {c["name"] for c in pys} == set(m["guest_agent"]["python_packages"]) - pruned
    assert [c["name"] for c in containers] == ["mariadb"]
    assert len(containers[0]["components"]) == len(m["datastore"]["images"][0]["packages"])
    assert all(c["purl"].endswith("?arch=amd64&distro=trixie") for c in debs)
    summary = json.loads(proc.stdout)
    assert summary["image_sha256_checked"] is True
    assert summary["components"]["os_packages"] == len(m["packages"])
    # the same again, named by the manifest: the same bytes
    again = tmp_path / "again.json"
    manifest_file = prod_mariadb.path.with_name(prod_mariadb.path.name + ".manifest.json")
    assert cli("sbom", str(manifest_file), "-o", str(again)).returncode == 0
    assert again.read_bytes() == out.read_bytes()


def test_sbom_of_an_agentless_package_image(mariadb_package, tmp_path):
    out = tmp_path / "pkg.json"
    proc = cli("sbom", str(mariadb_package.path), "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    counts = json.loads(proc.stdout)["components"]
    m = mariadb_package.manifest
    assert counts["os_packages"] == len(m["packages"])
    assert (counts["python_packages"], counts["container_images"]) == (0, 0)


def test_diff_of_an_image_with_itself(prod_mariadb):
    proc = cli("diff", str(prod_mariadb.path), str(prod_mariadb.path))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.splitlines()[-1] == "the same content"


def test_diff_of_two_images(mariadb_package, prod_mariadb):
    proc = cli("diff", str(mariadb_package.path), str(prod_mariadb.path))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert proc.stderr == ""
    lines = proc.stdout.splitlines()
    assert "datastore:" in lines
    assert "  ~ runtime: package -> container" in lines
    assert any(ln.startswith("  + image mariadb:11.8 sha256:") for ln in lines)
    assert any(ln.startswith("packages: ") and "added" in ln for ln in lines)
    proc = cli("diff", str(mariadb_package.path), str(prod_mariadb.path), "--json")
    assert proc.returncode == 1
    r = json.loads(proc.stdout)
    assert {"packages", "datastore", "guest_agent"} <= set(r["differences"])
    assert r["datastore"]["changed"]["runtime"] == ["package", "container"]


def test_build_with_sbom_from_the_cache(prod_mariadb, tmp_path):
    """Another build of prod-mariadb: the cache has the finished image."""
    out = tmp_path / "prod-mariadb.qcow2"
    proc = cli("build", "prod-mariadb", "-o", str(out), "--sbom", timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    sbom = tmp_path / "prod-mariadb.qcow2.sbom.cdx.json"
    assert json.loads(proc.stdout)["sbom"] == str(sbom)
    doc = json.loads(sbom.read_text())
    assert doc["metadata"]["component"]["hashes"][0]["content"] == file_hashes(out)[0]
