"""'profiles list' (OS and datastore columns) and 'profiles matrix [--json]',
what CI systems fan out on."""
import json

import pytest

from tests.helpers.cli import REPO, assert_error, invoke as run
from trove_image_builder import profile as profiles

SHIPPED = sorted(profiles.available())

GOOD = """
name: good
description: fine
os: {distro: ubuntu}
datastore: {name: mariadb, version: "11.8", runtime: container}
guest_agent: {install: release, version: "26.0.0"}
"""
BARE = """
name: bare
description: nothing in it
variant: development
guest_agent: {install: none}
"""


@pytest.fixture
def own_profiles(tmp_path, monkeypatch):
    """A profiles folder of the test's own: write(name, text)."""
    folder = tmp_path / "profiles"
    folder.mkdir()
    monkeypatch.setattr(profiles, "profiles_dir", lambda: folder)

    def write(name, text):
        (folder / f"{name}.yaml").write_text(text)
    return write


def test_matrix_json_lists_every_shipped_profile_by_name():
    result = run("profiles", "matrix", "--json")
    assert result.exit_code == 0, result.output
    assert result.stdout.count("\n") == 1        # one line
    entries = json.loads(result.stdout)
    assert [e["name"] for e in entries] == SHIPPED
    for entry in entries:
        p = profiles.load(entry["name"])
        assert entry["os"] == {"distro": p.os.distro, "release": p.os.release}
        assert entry["variant"] == p.variant and entry["backend"] == p.backend
        assert entry["datastore"] == (None if p.datastore is None else {
            "name": p.datastore.name, "version": p.datastore.version,
            "runtime": p.datastore.runtime})
        assert entry["file"] == f"profiles/{entry['name']}.yaml"
        assert (REPO / entry["file"]).is_file()


def test_matrix_json_is_stable():
    assert run("profiles", "matrix", "--json").stdout == \
        run("profiles", "matrix", "--json").stdout


def test_matrix_json_entries(own_profiles):
    own_profiles("good", GOOD)
    own_profiles("bare", BARE)
    result = run("profiles", "matrix", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == [
        {"name": "bare", "os": {"distro": "debian", "release": "trixie"},
         "datastore": None, "variant": "development", "backend": "dib",
         "file": "profiles/bare.yaml"},
        {"name": "good", "os": {"distro": "ubuntu", "release": "noble"},
         "datastore": {"name": "mariadb", "version": "11.8", "runtime": "container"},
         "variant": "production", "backend": "dib", "file": "profiles/good.yaml"},
    ]
    assert list(json.loads(result.stdout)[0]) == ["name", "os", "datastore", "variant",
                                                  "backend", "file"]


def test_matrix_table(own_profiles):
    own_profiles("good", GOOD)
    own_profiles("bare", BARE)
    result = run("profiles", "matrix")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [
        "NAME  DISTRO  RELEASE  DATASTORE  VERSION  RUNTIME    VARIANT      BACKEND  FILE",
        "bare  debian  trixie   -          -        -          development  dib      "
        "profiles/bare.yaml",
        "good  ubuntu  noble    mariadb    11.8     container  production   dib      "
        "profiles/good.yaml",
    ]


@pytest.mark.parametrize("as_json", [(), ("--json",)])
def test_matrix_fails_on_an_invalid_profile(own_profiles, as_json, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    own_profiles("good", GOOD)
    own_profiles("jammy", GOOD.replace("name: good", "name: jammy").replace(
        "{distro: ubuntu}", "{distro: ubuntu, release: jammy}"))
    assert_error(run("profiles", "matrix", *as_json), (
        "profiles/jammy.yaml: guest_agent.version: the Trove 26.0.0 guest agent needs "
        "Python >=3.11 (its Requires-Python) and Ubuntu jammy has Python 3.10; the newest "
        "agent release that runs there is 25.1.0"))


def test_matrix_checks_the_datastore_element(own_profiles, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    own_profiles("odd", GOOD.replace("name: mariadb", "name: nosuch"))
    result = run("profiles", "matrix", "--json")
    assert result.exit_code == 2
    assert result.stderr.startswith("Error: profiles/odd.yaml: datastore.name: unknown "
                                    "datastore 'nosuch'; known: ")


def test_list_shows_os_and_datastore(own_profiles):
    own_profiles("good", GOOD)
    own_profiles("bare", BARE)
    own_profiles("broken", "name: broken\ncolour: blue\n")
    result = run("profiles", "list")
    assert result.exit_code == 0, result.output
    out = result.stdout.splitlines()
    assert out[0] == "NAME    OS             DATASTORE                 DESCRIPTION"
    assert out[1] == "bare    debian trixie  -                         nothing in it"
    assert out[2].startswith("broken  ?              ?                         (invalid: ")
    assert "colour" in out[2]
    assert out[3] == "good    ubuntu noble   mariadb 11.8 (container)  fine"
    assert len(out) == 4


def test_list_rows_of_the_shipped_profiles():
    result = run("profiles", "list")
    assert result.exit_code == 0, result.output
    header, *rows = result.stdout.splitlines()
    assert header.split() == ["NAME", "OS", "DATASTORE", "DESCRIPTION"]
    start = header.index("DESCRIPTION")
    assert [r.split()[0] for r in rows] == SHIPPED
    for name, row in zip(SHIPPED, rows):
        p = profiles.load(name)
        assert row.split()[1:3] == [p.os.distro, p.os.release]
        assert row[start:] == p.description
