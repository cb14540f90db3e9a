"""register for real: the command line, Trove 26's own trove-manage (.venv),
and Trove databases it migrated itself (tests/helpers/trove_db.py): a
private MariaDB, as Trove runs on, and SQLite. The tables are read back here
with plain SQL, not through trove_image_builder.release.register.

Needs Debian's mariadb-server-core (mariadbd, mariadb-install-db).
"""
import importlib.util
import json
from pathlib import Path
import shutil
import time

import pytest

from tests.helpers import trove_db
from tests.helpers.cli import cli

pytestmark = pytest.mark.integration

TROVE_MANAGE = trove_db.TROVE_MANAGE
TROVE_DIR = Path(importlib.util.find_spec("trove").submodule_search_locations[0])


@pytest.fixture(scope="session")
def mariadb(tmp_path_factory):
    if not trove_db.MariaDB.available():
        pytest.fail("mariadbd is not installed: apt-get install mariadb-server-core")
    server = trove_db.MariaDB(tmp_path_factory.mktemp("mariadb")).start()
    yield server
    server.stop()


@pytest.fixture
def db(mariadb, tmp_path) -> trove_db.TroveDB:
    return mariadb.database(tmp_path / "trove")


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory):
    folder = tmp_path_factory.mktemp("sqlite")
    start = time.monotonic()
    path = trove_db.migrated_sqlite(folder)
    print(f"db_sync on SQLite: {time.monotonic() - start:.1f} s")
    return path


@pytest.fixture(scope="session")
def built(prod_mariadb, prod_mysql_noble) -> dict:
    """The manifests of the run's real builds, by profile."""
    return {"prod-mariadb": prod_mariadb.path, "prod-mysql-noble": prod_mysql_noble.path}


def manifest_copy(tmp_path, built, profile, **datastore) -> Path:
    """A copy of a real build's manifest, datastore fields edited."""
    folder = tmp_path / f"m{len(list(tmp_path.glob('m*')))}"
    folder.mkdir()
    image = built[profile]
    path = folder / f"{profile}.qcow2.manifest.json"
    shutil.copyfile(image.with_name(image.name + ".manifest.json"), path)
    data = json.loads(path.read_text())
    data["datastore"].update(datastore)
    path.write_text(json.dumps(data))
    return path


def register(db, target, *args, trove_manage=TROVE_MANAGE):
    start = time.monotonic()
    proc = cli("register", str(target), "--config-file", str(db.config),
               "--trove-manage", str(trove_manage), *args, timeout=600)
    print(f"register: {time.monotonic() - start:.1f} s")
    return proc


def rules(manager):
    path = TROVE_DIR / "templates" / manager / "validation-rules.json"
    return json.loads(path.read_text())["configuration-parameters"]


def versions(db, datastore):
    return db.rows("SELECT v.* FROM datastore_versions v JOIN datastores d ON "
                   "v.datastore_id = d.id WHERE d.name = :n ORDER BY v.version", n=datastore)


def assert_registered(db, datastore, version, manager, default=True):
    """The rows Trove needs for datastore version, read here."""
    ds = db.rows("SELECT * FROM datastores WHERE name = :n", n=datastore)
    assert len(ds) == 1
    row = [v for v in versions(db, datastore) if v["version"] == version]
    assert len(row) == 1
    row = row[0]
    assert (row["name"], row["manager"], row["image_id"], row["packages"], row["active"]) == \
        (version, manager, "", "", 1)
    assert row["image_tags"] == f"trove,{datastore},{datastore}-{version}"
    assert row["registry_ext"].startswith("trove.guestagent.datastore.")
    if default:
        assert ds[0]["default_version_id"] == row["id"]
    params = {p["name"]: p for p in db.rows(
        "SELECT * FROM datastore_configuration_parameters WHERE datastore_version_id = :v",
        v=row["id"])}
    expected = rules(manager)
    assert len(params) == len(expected)
    for p in expected:
        got = params[p["name"]]
        assert (got["data_type"], bool(got["restart_required"])) == \
            (p["type"], bool(p["restart_required"]))
        assert got["max_size"] == (None if p.get("max") is None else str(p["max"]))
    return row


def test_register_a_real_manifest_then_again_then_another_version(db, built, tmp_path):
    target = manifest_copy(tmp_path, built, "prod-mariadb")
    proc = register(db, target)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    version = out["version"]
    row = assert_registered(db, "mariadb", version, "mariadb")
    assert out["version_id"] == row["id"]
    assert out["parameters_loaded"] == len(rules("mariadb")) == 40
    assert "trove-manage db_load_datastore_config_parameters mariadb" in proc.stderr

    # again: the same rows, nothing added
    dump = db.dump()
    proc = register(db, target)
    assert proc.returncode == 0, proc.stderr
    assert db.dump() == dump

    # another version of the datastore becomes the default; the first stays
    proc = register(db, manifest_copy(tmp_path, built, "prod-mariadb", version="10.11"))
    assert proc.returncode == 0, proc.stderr
    assert_registered(db, "mariadb", "10.11", "mariadb")
    assert_registered(db, "mariadb", version, "mariadb", default=False)
    assert len(versions(db, "mariadb")) == 2

    # a third one, not the default
    proc = register(db, manifest_copy(tmp_path, built, "prod-mariadb", version="11.4"),
                    "--no-default", "--image-id", "0b1c8a4e-aaaa-bbbb-cccc-000000000001")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["default"] is False
    assert db.rows("SELECT v.version FROM datastores d JOIN datastore_versions v ON "
                   "d.default_version_id = v.id")[0]["version"] == "10.11"
    assert [v["image_id"] for v in versions(db, "mariadb") if v["version"] == "11.4"] == \
        ["0b1c8a4e-aaaa-bbbb-cccc-000000000001"]


def test_register_mysql_beside_mariadb(db, built, tmp_path):
    assert register(db, manifest_copy(tmp_path, built, "prod-mariadb")).returncode == 0
    proc = register(db, manifest_copy(tmp_path, built, "prod-mysql-noble"))
    assert proc.returncode == 0, proc.stderr
    assert_registered(db, "mysql", json.loads(proc.stdout)["version"], "mysql")
    assert len(db.rows("SELECT * FROM datastores")) == 2


def test_an_unknown_manager_changes_nothing(db, built, tmp_path):
    assert register(db, manifest_copy(tmp_path, built, "prod-mariadb")).returncode == 0
    dump = db.dump()
    proc = register(db, manifest_copy(tmp_path, built, "prod-mariadb", manager="cassandra",
                                      version="4.1"))
    assert proc.returncode == 1
    assert proc.stdout == ""
    lines = [line for line in proc.stderr.splitlines() if line.startswith("Error:")]
    assert lines == [proc.stderr.splitlines()[-1]]
    assert lines[0].startswith("Error: datastore manager 'cassandra' is unknown to this Trove")
    assert db.dump() == dump


@pytest.mark.parametrize("existing", [False, True], ids=["new-datastore", "existing"])
def test_a_failure_on_the_third_command_changes_nothing(db, built, tmp_path, existing):
    """A trove-manage that does its third command, then fails."""
    if existing:
        assert register(db, manifest_copy(tmp_path, built, "prod-mariadb",
                                          version="10.11")).returncode == 0
    wrapper = tmp_path / "trove-manage"
    count = tmp_path / "count"
    wrapper.write_text(f"""#!/bin/bash
set -u
n=$(( $(cat {count} 2>/dev/null || echo 0) + 1 ))
echo "$n" > {count}
"{TROVE_MANAGE}" "$@" || exit
if [ "$n" = 3 ]; then echo "injected failure" >&2; exit 1; fi
""")
    wrapper.chmod(0o755)
    dump = db.dump()
    proc = register(db, manifest_copy(tmp_path, built, "prod-mariadb"), trove_manage=wrapper)
    assert proc.returncode == 1, proc.stderr
    assert count.read_text().strip() == "3"
    last = proc.stderr.splitlines()[-1]
    third = "datastore_update" if not existing else "db_load_datastore_config_parameters"
    assert last.startswith(f"Error: trove-manage {third}: command failed with exit code 1: ")
    assert last.endswith("(injected failure); Trove's datastore tables were restored as "
                         "they were")
    assert db.dump() == dump


def test_trove_failing_half_way_on_sqlite_is_rolled_back(sqlite_template, built, tmp_path):
    """Trove 26 cannot load MariaDB's validation rules into SQLite (a
    maximum above 2**63 - 1: OverflowError), after committing the first
    parameters one by one: the registration is undone."""
    db = trove_db.sqlite_db(tmp_path / "trove", sqlite_template)
    dump = db.dump()
    proc = register(db, manifest_copy(tmp_path, built, "prod-mariadb"))
    assert proc.returncode == 1
    last = proc.stderr.splitlines()[-1]
    assert last.startswith("Error: trove-manage db_load_datastore_config_parameters: "
                           "command failed with exit code 1: ")
    assert "rolled back: " in proc.stderr
    assert db.dump() == dump


def test_publish_then_register_with_the_glance_image_id(db, built, tmp_path, capsys):
    """publish --register: the real image into a real Glance, then its
    datastore version into Trove's database with the id Glance gave; a
    registration that cannot be done is found before anything is uploaded."""
    from tests.helpers.glance import Glance
    with Glance() as glance:
        env = glance.env()
        bad = manifest_copy(tmp_path, built, "prod-mariadb", manager="cassandra")
        image = bad.with_name("prod-mariadb.qcow2")
        image.symlink_to(built["prod-mariadb"])
        proc = cli("publish", str(image), "--register", "--config-file", str(db.config),
                   "--trove-manage", str(TROVE_MANAGE), env=env, timeout=600)
        assert proc.returncode == 1
        assert proc.stderr.splitlines()[-1].startswith(
            "Error: datastore manager 'cassandra' is unknown to this Trove")
        assert list(glance.connect().image.images()) == []
        assert db.rows("SELECT * FROM datastores") == []

        start = time.monotonic()
        proc = cli("publish", str(built["prod-mariadb"]), "--register", "--config-file",
                   str(db.config), "--trove-manage", str(TROVE_MANAGE), env=env, timeout=600)
        took = time.monotonic() - start
        assert proc.returncode == 0, proc.stderr[-3000:]
        out = json.loads(proc.stdout)
        [image] = list(glance.connect().image.images())
        assert out["id"] == image.id and out["registration"]["image_id"] == image.id
        [row] = versions(db, "mariadb")
        assert (row["image_id"], row["manager"], row["active"]) == (image.id, "mariadb", 1)
        assert set(row["image_tags"].split(",")) == set(image.tags)
        with capsys.disabled():
            print(f"\n[publish --register] {took:.1f} s", flush=True)
