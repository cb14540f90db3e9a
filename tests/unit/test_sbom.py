"""release/sbom.py and `sbom`: a CycloneDX SBOM from a real manifest (a
trimmed copy of a prod-mariadb build's, tests/unit/data), validated by the
library's own schema validator."""
import copy
import hashlib
import json
from pathlib import Path
import shutil
import uuid

import pytest

from trove_image_builder.errors import InputError
from trove_image_builder.release import sbom

from tests.helpers.cli import assert_error, invoke as run
from tests.helpers.fake_backend import fake_backend

DATA = Path(__file__).parent / "data" / "prod-mariadb.qcow2.manifest.json"
IMAGE_ID = "3a34d46e928988c2223d635b1fd305e5cbfa7f034d8982040627a00b178c6082"


@pytest.fixture
def manifest_file(tmp_path) -> Path:
    """The real manifest, alone in a folder (no image beside it)."""
    path = tmp_path / DATA.name
    shutil.copy(DATA, path)
    return path


def real() -> dict:
    return json.loads(DATA.read_text())


def write_manifest(folder: Path, manifest: dict, name="x.qcow2") -> Path:
    path = folder / f"{name}.manifest.json"
    path.write_text(json.dumps(manifest))
    return path


def doc_of(path: Path) -> dict:
    return json.loads(sbom.make(path).text)


def by_name(components, name):
    (found,) = [c for c in components if c["name"] == name]
    return found


def props(component) -> dict:
    return {p["name"].removeprefix(sbom.PROP): p["value"]
            for p in component.get("properties", [])}


# --------------------------------------------------------------------------
# content

def test_every_package_of_the_manifest_is_a_component(manifest_file):
    m = real()
    made = sbom.make(manifest_file)
    doc = json.loads(made.text)
    debs = [c for c in doc["components"] if c.get("purl", "").startswith("pkg:deb/")]
    pys = [c for c in doc["components"] if c.get("purl", "").startswith("pkg:pypi/")]
    containers = [c for c in doc["components"] if c["type"] == "container"]
    assert len(debs) == len(m["packages"]) == 249
    assert len(pys) == len(m["guest_agent"]["python_packages"]) == 129
    assert len(containers) == 1
    assert len(containers[0]["components"]) == len(m["datastore"]["images"][0]["packages"])
    assert made.counts == {"os_packages": 249, "python_packages": 129,
                           "python_packages_pruned": 0, "container_images": 1,
                           "container_packages": 12, "operating_system": 1,
                           "datastore": 1, "total": 393}
    assert {c["name"]: c["version"] for c in debs} == m["packages"]


def test_pruned_agent_distributions_are_not_components(tmp_path):
    """Only the metadata of what the production build pruned is in the
    image (manifest guest_agent.pruned_packages): the SBOM leaves them out."""
    m = real()
    m["guest_agent"]["pruned_packages"] = ["pip", "python-openstackclient"]
    made = sbom.make(write_manifest(tmp_path, m))
    names = {c["name"] for c in json.loads(made.text)["components"]
             if c.get("purl", "").startswith("pkg:pypi/")}
    assert "pip" not in names and "python-openstackclient" not in names
    assert "trove" in names and len(names) == 127
    assert made.counts["python_packages"] == 127
    assert made.counts["python_packages_pruned"] == 2


def test_purls_and_bom_refs(manifest_file):
    doc = doc_of(manifest_file)
    comps = doc["components"]
    bsdutils = by_name([c for c in comps if c["type"] == "library"], "bsdutils")
    assert bsdutils["purl"] == \
        "pkg:deb/debian/bsdutils@1:2.41.5-0%2Bdeb13u1?arch=amd64&distro=trixie"
    assert bsdutils["version"] == "1:2.41.5-0+deb13u1"
    dogpile = by_name(comps, "dogpile.cache")
    assert dogpile["purl"] == "pkg:pypi/dogpile-cache@1.5.0"
    assert props(dogpile) == {"venv": "/opt/guest-agent-venv"}
    (container,) = [c for c in comps if c["type"] == "container"]
    assert container["purl"] == f"pkg:docker/mariadb@sha256:{IMAGE_ID}?tag=11.8"
    assert container["hashes"] == [{"alg": "SHA-256", "content": IMAGE_ID}]
    assert props(container)["archive_sha256"] == real()["datastore"]["images"][0][
        "archive_sha256"]
    nested = by_name(container["components"], "adduser")
    assert nested["purl"] == "pkg:deb/debian/adduser@3.152?arch=amd64"
    assert nested["bom-ref"] == f"{container['purl']}#adduser"
    for c in comps:
        if "purl" in c:
            assert c["bom-ref"] == c["purl"]
    datastore = by_name([c for c in comps if c["type"] == "application"], "mariadb")
    assert (datastore["version"], props(datastore)["runtime"]) == ("11.8", "container")
    (os_comp,) = [c for c in comps if c["type"] == "operating-system"]
    assert (os_comp["name"], os_comp["version"]) == ("debian", "13")


def test_the_image_is_the_metadata_component(manifest_file):
    m = real()
    doc = doc_of(manifest_file)
    assert (doc["bomFormat"], doc["specVersion"]) == ("CycloneDX", "1.7")
    meta = doc["metadata"]
    image = meta["component"]
    assert (image["type"], image["name"], image["version"]) == \
        ("file", "prod-mariadb", m["built_at"])
    # no image file beside the manifest: the manifest's SHA-256 only
    assert image["hashes"] == [{"alg": "SHA-256", "content": m["image"]["sha256"]}]
    assert props(image)["arch"] == "amd64"
    assert props(image)["manifest_digest"] == \
        "sha256:" + hashlib.sha256(manifest_file.read_bytes()).hexdigest()
    assert meta["timestamp"] == m["built_at"]
    assert meta["tools"]["components"][0]["name"] == "trove-image-builder"
    assert doc["serialNumber"] == \
        f"urn:uuid:{uuid.uuid5(sbom.SERIAL_NAMESPACE, m['image']['sha256'])}"
    deps = {d["ref"]: set(d.get("dependsOn", [])) for d in doc["dependencies"]}
    assert len(deps[image["bom-ref"]]) == 1 + 129 + 1 + 1    # os, python, container, datastore
    assert len(deps["os:debian@13"]) == 249
    assert deps["datastore:mariadb@11.8"] == {f"pkg:docker/mariadb@sha256:{IMAGE_ID}?tag=11.8"}


def test_an_ubuntu_image_gets_ubuntu_purls(tmp_path):
    m = real()
    m["os"] = {"distro": "ubuntu", "release": "noble",
               "os_release": {"ID": "ubuntu", "VERSION_ID": "24.04"}}
    doc = doc_of(write_manifest(tmp_path, m))
    assert by_name(doc["components"], "bash")["purl"] == \
        "pkg:deb/ubuntu/bash@5.2.37-2%2Bb10?arch=amd64&distro=noble"


def test_an_agentless_package_datastore_image(tmp_path):
    m = real()
    m["guest_agent"] = {"install": "none", "version": None, "venv": None,
                        "python_packages": {}}
    m["datastore"] = {"name": "mariadb", "manager": "mariadb", "version": "10.11",
                      "runtime": "package", "package": "mariadb-server", "images": []}
    m["packages"]["mariadb-server"] = "1:10.11.19-0+deb12u1"
    made = sbom.make(write_manifest(tmp_path, m))
    assert made.counts == {"os_packages": 250, "python_packages": 0,
                           "python_packages_pruned": 0, "container_images": 0,
                           "container_packages": 0, "operating_system": 1,
                           "datastore": 1, "total": 252}
    doc = json.loads(made.text)
    deps = {d["ref"]: d.get("dependsOn", []) for d in doc["dependencies"]}
    assert deps["datastore:mariadb@10.11"] == [
        "pkg:deb/debian/mariadb-server@1:10.11.19-0%2Bdeb12u1?arch=amd64&distro=trixie"]


@pytest.mark.parametrize("ref, parts", [
    ("mariadb:11.8", (None, None, "mariadb", "11.8")),
    ("library/postgres:17", (None, "library", "postgres", "17")),
    ("quay.io/org/team/db:1.0", ("quay.io", "org/team", "db", "1.0")),
    ("localhost:5000/db", ("localhost:5000", None, "db", None)),
    ("db@sha256:abc", (None, None, "db", None)),
])
def test_split_ref(ref, parts):
    assert sbom.split_ref(ref) == parts


# --------------------------------------------------------------------------
# the image file: checked and hashed when it is there

def test_with_the_image_its_sha256_is_checked_and_sha512_added(tmp_path):
    image = tmp_path / "x.qcow2"
    image.write_bytes(b"QFI\xfb not really an image")
    m = real()
    m["image"]["sha256"] = hashlib.sha256(image.read_bytes()).hexdigest()
    write_manifest(tmp_path, m)
    made = sbom.make(image)
    assert made.sha256_checked and made.image == image
    hashes = json.loads(made.text)["metadata"]["component"]["hashes"]
    assert hashes == [{"alg": "SHA-256", "content": m["image"]["sha256"]},
                      {"alg": "SHA-512",
                       "content": hashlib.sha512(image.read_bytes()).hexdigest()}]
    # named by its manifest, the image beside it is checked too
    assert sbom.make(tmp_path / "x.qcow2.manifest.json").text == made.text


def test_an_image_that_is_not_its_manifests_is_refused(tmp_path):
    image = tmp_path / "x.qcow2"
    image.write_bytes(b"changed after the build")
    write_manifest(tmp_path, real())
    with pytest.raises(InputError, match="its manifest says 21e60e9a"):
        sbom.make(image)


# --------------------------------------------------------------------------
# validation: really run, and able to fail

def test_the_real_document_validates():
    sbom.validate(sbom.make(DATA).text)


def test_an_invalid_document_is_refused_by_the_validator():
    doc = json.loads(sbom.make(DATA).text)
    doc["components"][0]["type"] = "disk-image"
    with pytest.raises(sbom.InvalidSbom, match="'disk-image' is not one of") as info:
        sbom.validate(json.dumps(doc))
    assert info.value.exit_code == 70


def test_a_broken_bom_is_never_written(manifest_file, monkeypatch):
    class Broken(sbom.OUTPUT):
        def output_as_string(self, **kwargs):
            doc = json.loads(super().output_as_string(**kwargs))
            doc["serialNumber"] = "not-a-urn"
            return json.dumps(doc)
    monkeypatch.setattr(sbom, "OUTPUT", Broken)
    result = run("sbom", str(manifest_file))
    assert result.exit_code == 70, result.output
    assert result.stderr.splitlines()[-1].startswith(
        "Error: internal error: the SBOM does not validate against CycloneDX 1.7: "
        "'not-a-urn' does not match")
    assert "$.serialNumber" in result.stderr
    assert not sbom.default_path(manifest_file).exists()


# --------------------------------------------------------------------------
# the command

def test_sbom_writes_beside_the_manifest_and_prints_counts(manifest_file):
    result = run("sbom", str(manifest_file))
    assert result.exit_code == 0, result.output
    out = manifest_file.with_name("prod-mariadb.qcow2.sbom.cdx.json")
    summary = json.loads(result.stdout)
    assert summary["sbom"] == str(out)
    assert summary["components"]["os_packages"] == 249
    assert summary["components"]["total"] == 393
    assert summary["image_sha256_checked"] is False
    assert json.loads(out.read_text())["specVersion"] == "1.7"


def test_two_runs_give_the_same_bytes(manifest_file, tmp_path):
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    assert run("sbom", str(manifest_file), "-o", str(a)).exit_code == 0
    assert run("sbom", str(manifest_file), "-o", str(b)).exit_code == 0
    assert a.read_bytes() == b.read_bytes()


def test_sbom_to_stdout(manifest_file):
    result = run("sbom", str(manifest_file), "-o", "-")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["bomFormat"] == "CycloneDX"
    assert json.loads(result.stderr.splitlines()[-1])["sbom"] == "-"
    assert not sbom.default_path(manifest_file).exists()


def test_sbom_of_a_missing_image(tmp_path):
    assert_error(run("sbom", str(tmp_path / "x.qcow2")), f"{tmp_path / 'x.qcow2'}: no such "
                 "image file")


def test_sbom_of_a_manifest_without_packages(tmp_path):
    m = copy.deepcopy(real())
    del m["packages"]
    path = write_manifest(tmp_path, m)
    result = run("sbom", str(path))
    assert result.exit_code == 2
    assert result.stderr.splitlines()[-1] == (
        f"Error: {path}: not the manifest of a built image (no 'packages' section); "
        "build the image again")


@pytest.mark.parametrize("name, expected", [
    ("out/x.qcow2", "out/x.qcow2.sbom.cdx.json"),
    ("out/x.qcow2.manifest.json", "out/x.qcow2.sbom.cdx.json"),
    ("out/m.json", "out/m.sbom.cdx.json"),
])
def test_default_path(name, expected):
    assert sbom.default_path(Path(name)) == Path(expected)


# --------------------------------------------------------------------------
# build --sbom

def test_build_dry_run_with_sbom_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("TROVE_IMAGE_BUILDER_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "x.qcow2"
    result = run("build", "prod-mariadb", "-o", str(out), "--dry-run", "--sbom")
    assert result.exit_code == 0, result.output
    assert f"--sbom: would write {out}.sbom.cdx.json (dry run: not written)" in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_build_with_sbom_writes_it_beside_the_image(tmp_path, monkeypatch):
    m = real()
    contents = {k: m[k] for k in ("os", "packages", "services_enabled", "guest_agent",
                                  "certificates")}
    contents["datastore"] = None
    with fake_backend(monkeypatch, contents) as backend:
        from trove_image_builder.build import backends
        monkeypatch.setattr(backends, "get", lambda name: backend())
        result = run("build", "prod-mariadb", "-o", str(tmp_path / "x.qcow2"), "--sbom")
    assert result.exit_code == 0, result.output
    out = tmp_path / "x.qcow2.sbom.cdx.json"
    assert json.loads(result.stdout)["sbom"] == str(out)
    doc = json.loads(out.read_text())
    image = tmp_path / "x.qcow2"
    assert doc["metadata"]["component"]["hashes"][1] == {
        "alg": "SHA-512", "content": hashlib.sha512(image.read_bytes()).hexdigest()}
    assert sum(c.get("purl", "").startswith("pkg:deb/") for c in doc["components"]) == 249
