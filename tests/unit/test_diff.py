"""release/diff.py and `diff`: two manifests made from a real one (a trimmed
copy of a prod-mariadb build's, tests/unit/data), changed field by field."""
import json
from pathlib import Path

import pytest

from trove_image_builder.release import diff

from tests.helpers.cli import assert_error, invoke as run

DATA = Path(__file__).parent / "data" / "prod-mariadb.qcow2.manifest.json"
IMAGE_ID = "sha256:3a34d46e928988c2223d635b1fd305e5cbfa7f034d8982040627a00b178c6082"


def real() -> dict:
    return json.loads(DATA.read_text())


def rebuilt() -> dict:
    """The same content, built again: another time, another file."""
    m = real()
    m["built_at"] = "2026-12-08T10:00:00+00:00"
    m["image"]["sha256"] = "ab" * 32
    m["image"]["size_bytes"] += 1 << 20
    m["sizes"]["filesystem"]["used_bytes"] += 4096
    return m


def write(folder: Path, name: str, manifest: dict) -> Path:
    path = folder / f"{name}.qcow2.manifest.json"
    path.write_text(json.dumps(manifest))
    return path


def lines_of(tmp_path, a: dict, b: dict, *options):
    result = run("diff", str(write(tmp_path, "a", a)), str(write(tmp_path, "b", b)), *options)
    return result, result.stdout.splitlines()


def test_the_same_content_built_again_is_equal(tmp_path):
    result, lines = lines_of(tmp_path, real(), rebuilt())
    assert result.exit_code == 0, result.output
    assert result.stderr == ""
    assert lines[0] == (f"A: {tmp_path}/a.qcow2.manifest.json (prod-mariadb, built "
                        "2026-12-07T19:58:29+00:00, sha256 21e60e9a64430f5f)")
    assert lines[1] == (f"B: {tmp_path}/b.qcow2.manifest.json (prod-mariadb, built "
                        "2026-12-08T10:00:00+00:00, sha256 abababababababab)")
    assert lines[2:] == [
        "os: the same, debian trixie (13)",
        "packages: the same, 249",
        "guest agent: the same",
        "services: the same",
        "datastore: the same",
        "sizes (shown, not compared):",
        "  image: 393.7 MiB -> 394.7 MiB (+1.0 MiB)",
        "  root fs used: 1092.3 MiB -> 1092.3 MiB (+4.0 KiB)",
        "the same content",
    ]


def test_a_package_upgraded_added_and_removed(tmp_path):
    b = real()
    b["packages"]["bash"] = "5.2.37-3"
    b["packages"]["strace"] = "6.13+ds-1"
    del b["packages"]["adduser"]
    result, lines = lines_of(tmp_path, real(), b)
    assert result.exit_code == 1, result.output
    assert result.stderr == ""          # a difference is a result, not an error
    start = lines.index("packages: 249 -> 249: 1 added, 1 removed, 1 changed")
    assert lines[start + 1:start + 4] == [
        "  - adduser 3.152",
        "  + strace 6.13+ds-1",
        "  ~ bash 5.2.37-2+b10 -> 5.2.37-3",
    ]
    assert lines[start + 4] == "guest agent: the same"
    assert lines[-1] == "differ: packages"


def test_agent_services_datastore_and_os(tmp_path):
    b = real()
    b["guest_agent"]["version"] = "27.0.0"
    b["guest_agent"]["python_packages"]["oslo.utils"] = "99.0"
    b["guest_agent"]["python_packages"]["newlib"] = "1.0"
    b["services_enabled"].remove("ssh.service")
    b["services_enabled"].append("mariadb.service")
    b["datastore"]["version"] = "11.9"
    b["datastore"]["images"][0]["image_id"] = "sha256:" + "cd" * 32
    b["os"]["release"] = "forky"
    b["os"]["os_release"]["VERSION_ID"] = "14"
    old_utils = real()["guest_agent"]["python_packages"]["oslo.utils"]
    result, lines = lines_of(tmp_path, real(), b)
    assert result.exit_code == 1
    assert "os: debian trixie (13) -> debian forky (14)" in lines
    start = lines.index("guest agent:")
    assert lines[start:start + 5] == [
        "guest agent:",
        "  ~ version: 26.0.0 -> 27.0.0",
        "  python packages: 1 added, 0 removed, 1 changed",
        "    + newlib 1.0",
        f"    ~ oslo.utils {old_utils} -> 99.0",
    ]
    start = lines.index("services: 1 added, 1 removed")
    assert lines[start + 1:start + 3] == ["  - ssh.service", "  + mariadb.service"]
    start = lines.index("datastore:")
    assert lines[start + 1:start + 3] == [
        "  ~ version: 11.8 -> 11.9",
        f"  ~ image mariadb:11.8 {IMAGE_ID} -> sha256:{'cd' * 32}",
    ]
    assert lines[-1] == "differ: os, guest agent, services, datastore"


def test_json_has_the_same_structure(tmp_path):
    b = rebuilt()
    b["packages"]["bash"] = "5.2.37-3"
    b["datastore"]["images"] = []
    result, _ = lines_of(tmp_path, real(), b, "--json")
    assert result.exit_code == 1
    r = json.loads(result.stdout)
    assert set(r) == {"a", "b", "os", "packages", "guest_agent", "services", "datastore",
                      "sizes", "differences", "equal"}
    assert r["equal"] is False and r["differences"] == ["packages", "datastore"]
    assert r["packages"] == {"count": [249, 249], "added": {}, "removed": {},
                             "changed": {"bash": ["5.2.37-2+b10", "5.2.37-3"]}}
    assert r["datastore"] == {"changed": {}, "images": {
        "added": {}, "removed": {"mariadb:11.8": IMAGE_ID}, "changed": {}}}
    assert r["services"] == {"added": [], "removed": []}
    assert r["sizes"]["image_bytes"] == {"a": 412830720, "b": 412830720 + (1 << 20),
                                         "delta": 1 << 20}
    assert (r["a"]["sha256"], r["b"]["sha256"]) == (real()["image"]["sha256"], "ab" * 32)


def test_json_when_equal(tmp_path):
    result, _ = lines_of(tmp_path, real(), rebuilt(), "--json")
    assert result.exit_code == 0
    assert json.loads(result.stdout)["equal"] is True


def test_bad_input_is_exit_code_2(tmp_path):
    good = write(tmp_path, "a", real())
    assert_error(run("diff", str(good), str(tmp_path / "none.qcow2")),
                 f"{tmp_path / 'none.qcow2'}: no such image file")
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"name": "not a manifest"}))
    assert_error(run("diff", str(other), str(good)),
                 f"{other}: not a manifest written by trove-image-builder (no 'image' section)")
    m = real()
    del m["packages"]
    thin = write(tmp_path, "thin", m)
    assert_error(run("diff", str(good), str(thin)),
                 f"{thin}: not the manifest of a built image (no 'packages' section)")


def test_an_agentless_image_against_one_with_an_agent():
    b = real()
    b["guest_agent"] = {"install": "none", "version": None, "venv": None}
    r = diff.compare("a", real(), "b", b)
    assert r["guest_agent"]["changed"] == {"install": ["release", "none"],
                                           "version": ["26.0.0", None],
                                           "venv": ["/opt/guest-agent-venv", None]}
    assert len(r["guest_agent"]["python_packages"]["removed"]) == 129
    assert r["differences"] == ["guest_agent"]


@pytest.mark.parametrize("n, signed, text", [
    (0, True, "+0 B"), (1023, False, "1023 B"), (1536, False, "1.5 KiB"),
    (-166109184, True, "-158.4 MiB"), (20 << 30, False, "20.0 GiB"), (None, True, "?"),
])
def test_human_bytes(n, signed, text):
    assert diff.human_bytes(n, signed) == text
