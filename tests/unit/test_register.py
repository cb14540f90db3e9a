"""register: the trove-manage argv, the read-back, the rollback.

Trove's database here is real (a SQLite file migrated once per session by
Trove's own trove-manage db_sync, about 2 s); trove-manage itself is a
stateful fake at the runner seam, writing the rows as Trove 26's
trove/datastore/models.py and trove/configuration/models.py do, so that a
failure can be injected at each step. tests/integration/test_register.py
runs the real trove-manage.
"""
import datetime
import importlib.util
import json
from pathlib import Path
import subprocess
import uuid

import pytest
import sqlalchemy as sa

from trove_image_builder.errors import BuildError, InputError
from trove_image_builder.release import glance, register as reg_mod
from trove_image_builder.release.register import (
    Registration, RegisterError, TroveDatabase, check, register)

from tests.helpers import manifests, trove_db
from tests.helpers.cli import assert_error, invoke

TROVE_DIR = Path(importlib.util.find_spec("trove").submodule_search_locations[0])
MANAGERS = {"mysql": "trove.guestagent.datastore.mysql.manager.Manager",
            "mariadb": "trove.guestagent.datastore.mariadb.manager.Manager",
            "postgresql": "trove.guestagent.datastore.postgres.manager.PostgresManager"}


def mariadb_manifest(**datastore) -> dict:
    """A manifest's parts that register reads, as a build writes them."""
    ds = {"name": "mariadb", "manager": "mariadb", "version": "11.8", "runtime": "container",
          "package": "docker.io"}
    ds.update(datastore)
    return {"schema": 2, "image": {"file": "x.qcow2"}, "datastore": ds,
            "profile": {"name": "prod-mariadb", "variant": "production"},
            "guest_agent": {"install": "release", "version": "26.0.0"}, "contract": {}}


@pytest.fixture
def manifest_file(tmp_path):
    def write(manifest=None, name="x.qcow2"):
        path = tmp_path / f"{name}.manifest.json"
        path.write_text(json.dumps(manifest or mariadb_manifest()))
        return path
    return write


@pytest.fixture(scope="session")
def template(tmp_path_factory) -> Path:
    return trove_db.migrated_sqlite(tmp_path_factory.mktemp("trove-db"))


@pytest.fixture
def db(tmp_path, template) -> trove_db.TroveDB:
    return trove_db.sqlite_db(tmp_path / "trove", template)


class FakeTroveManage:
    """trove-manage at the runner seam: the probe of the site's Python and
    the four datastore commands, writing Trove's rows; fail_at=N fails the
    Nth trove-manage command (after writing half of what it writes),
    silent_at=N makes it print an error and exit 0 having done nothing,
    as trove-manage does for an unknown datastore."""

    def __init__(self, db: trove_db.TroveDB, fail_at=None, silent_at=None):
        self.db = db
        self.fail_at, self.silent_at = fail_at, silent_at
        self.calls = []

    def __call__(self, argv, check=True, timeout=None, **_kw):
        argv = [str(a) for a in argv]
        if argv[1] == "-c":        # the probe
            out = json.dumps({"trove_dir": str(TROVE_DIR), "registry_ext": MANAGERS,
                              "configured": sorted(MANAGERS)})
            return subprocess.CompletedProcess(argv, 0, out + "\n", "")
        assert argv[1] == "--config-file"
        command = argv[3:]
        self.calls.append(command)
        n = len(self.calls)
        if n == self.silent_at:
            return subprocess.CompletedProcess(argv, 0, "Datastore 'x' cannot be found.\n", "")
        engine = self.db.engine()
        with engine.begin() as conn:
            getattr(self, command[0])(conn, *command[1:], half=(n == self.fail_at))
        engine.dispose()
        if n == self.fail_at:
            raise BuildError(f"command failed with exit code 1: {' '.join(argv)} (boom)")
        return subprocess.CompletedProcess(argv, 0, "done\n", "")

    @staticmethod
    def _one(conn, sql, **params):
        return conn.execute(sa.text(sql), params).mappings().first()

    def datastore_update(self, conn, name, default, half=False):
        ds = self._one(conn, "SELECT * FROM datastores WHERE name=:n", n=name)
        if ds is None:
            conn.execute(sa.text("INSERT INTO datastores (id, name) VALUES (:i, :n)"),
                         {"i": str(uuid.uuid4()), "n": name})
        conn.execute(sa.text("UPDATE datastores SET default_version_id=:d WHERE name=:n"),
                     {"d": default or None, "n": name})

    def datastore_version_update(self, conn, ds, name, manager, image_id, packages, active,
                                 *options, half=False):
        opts = dict(zip(options[::2], options[1::2]))
        ds_id = self._one(conn, "SELECT id FROM datastores WHERE name=:n", n=ds)["id"]
        version = opts.get("--version", name)
        row = self._one(conn, "SELECT id FROM datastore_versions WHERE datastore_id=:d "
                        "AND name=:n AND version=:v", d=ds_id, n=name, v=version)
        values = {"n": name, "m": manager, "i": image_id, "p": packages, "a": int(active),
                  "t": opts.get("--image-tags"), "r": MANAGERS.get(manager), "s": "x.Repl",
                  "d": ds_id, "v": version}
        if row is None:
            conn.execute(sa.text(
                "INSERT INTO datastore_versions (id, datastore_id, name, image_id, packages, "
                "active, manager, image_tags, version, registry_ext, repl_strategy) VALUES "
                "(:id, :d, :n, :i, :p, :a, :m, :t, :v, :r, :s)"), {"id": str(uuid.uuid4()),
                                                                   **values})
        else:
            conn.execute(sa.text(
                "UPDATE datastore_versions SET image_id=:i, packages=:p, active=:a, "
                "manager=:m, image_tags=:t, registry_ext=:r, repl_strategy=:s "
                "WHERE id=:id"), {"id": row["id"], **values})

    def db_load_datastore_config_parameters(self, conn, ds, name, rules, _opt, version,
                                            half=False):
        v_id = self._one(conn, "SELECT v.id FROM datastore_versions v JOIN datastores d ON "
                         "v.datastore_id=d.id WHERE d.name=:d AND v.name=:n AND v.version=:v",
                         d=ds, n=name, v=version)["id"]
        params = json.loads(Path(rules).read_text())["configuration-parameters"]
        for p in params[:len(params) // 2] if half else params:
            conn.execute(sa.text("DELETE FROM datastore_configuration_parameters WHERE "
                                 "datastore_version_id=:v AND name=:n"), {"v": v_id,
                                                                          "n": p["name"]})
            conn.execute(sa.text(
                "INSERT INTO datastore_configuration_parameters (id, name, "
                "datastore_version_id, restart_required, max_size, min_size, data_type) "
                "VALUES (:i, :n, :v, :r, :mx, :mn, :t)"),
                {"i": str(uuid.uuid4()), "n": p["name"], "v": v_id,
                 "r": bool(p["restart_required"]), "t": p["type"],
                 "mx": None if p.get("max") is None else str(p["max"]),
                 "mn": None if p.get("min") is None else str(p["min"])})


@pytest.fixture
def trove_manage(tmp_path) -> Path:
    """An executable named trove-manage (the fake runner answers for it)."""
    path = tmp_path / "bin" / "trove-manage"
    path.parent.mkdir()
    path.write_text("#!/bin/sh\nexit 1\n")
    path.chmod(0o755)
    return path


def do_register(db, path, trove_manage, fake, **kw):
    return register(path, db.config, trove_manage=str(trove_manage), runner=fake, **kw)


# --------------------------------------------------------------------------
# from the manifest to trove-manage's argv

def test_image_tags_are_the_ones_publish_sets():
    m = mariadb_manifest()
    assert Registration.from_manifest(m, "m.json").image_tags == \
        tuple(glance.tags_of(m)) == ("trove", "mariadb", "mariadb-11.8")
    m["profile"]["variant"] = "development"
    assert Registration.from_manifest(m, "m.json").image_tags[0] == "trove-dev"


def test_an_agentless_image_is_not_registered():
    m = mariadb_manifest()
    m["guest_agent"] = {"install": "none", "version": None}
    m["contract"]["agent_version"] = None
    with pytest.raises(InputError, match="no guest agent: Trove cannot run"):
        Registration.from_manifest(m, "m.json")


def test_a_container_image_is_registered_as_devstack_does(manifest_file):
    reg = Registration.from_manifest(mariadb_manifest(), "m.json")
    assert reg == Registration(datastore="mariadb", version_name="11.8", version="11.8",
                               manager="mariadb", image_id="",
                               image_tags=("trove", "mariadb", "mariadb-11.8"), packages="",
                               active=True, default=True)
    assert reg_mod.create_datastore_argv(reg) == ["datastore_update", "mariadb", ""]
    assert reg_mod.version_argv(reg) == [
        "datastore_version_update", "mariadb", "11.8", "mariadb", "", "", "1",
        "--image-tags", "trove,mariadb,mariadb-11.8", "--version", "11.8"]
    assert reg_mod.default_argv(reg, "ID") == ["datastore_update", "mariadb", "ID"]
    assert reg_mod.parameters_argv(reg, Path("/r.json")) == [
        "db_load_datastore_config_parameters", "mariadb", "11.8", "/r.json", "--version",
        "11.8"]


def test_options_change_the_argv():
    reg = Registration.from_manifest(mariadb_manifest(), "m.json", image_id="IMG",
                                     version_name="11.8-2026", default=False, active=False)
    assert reg_mod.version_argv(reg) == [
        "datastore_version_update", "mariadb", "11.8-2026", "mariadb", "IMG", "", "0",
        "--image-tags", "trove,mariadb,mariadb-11.8", "--version", "11.8"]


def test_a_package_runtime_names_its_server_package():
    reg = Registration.from_manifest(
        mariadb_manifest(runtime="package", package="mariadb-server", version="10.11"), "m")
    assert reg.packages == "mariadb-server"


def test_a_manifest_with_only_its_contract_section(tmp_path):
    image = tmp_path / "x.qcow2"
    image.write_bytes(b"")
    manifests.write(image, "prod-mariadb")
    from trove_image_builder.release import manifests as release_manifests
    manifest = release_manifests.load(image).manifest
    reg = Registration.from_manifest(manifest, "m")
    assert (reg.datastore, reg.manager) == ("mariadb", "mariadb")
    assert reg.version == manifest["contract"]["datastore_version"]


def test_an_image_without_a_datastore_is_refused():
    with pytest.raises(InputError, match="holds no datastore: nothing to register"):
        Registration.from_manifest({"image": {}, "datastore": None}, "m.json")


def test_an_inactive_default_is_refused():
    with pytest.raises(InputError, match="add --no-default"):
        Registration.from_manifest(mariadb_manifest(), "m", active=False)


def test_the_probe_uses_the_python_of_trove_manage(tmp_path):
    script = tmp_path / "trove-manage"
    script.write_text("#!/opt/trove/bin/python3.11\nimport sys\n")
    assert reg_mod.python_of(script) == "/opt/trove/bin/python3.11"
    script.write_text("#!/bin/sh\nexec docker exec trove trove-manage \"$@\"\n")
    assert reg_mod.python_of(script) == reg_mod.sys.executable


def test_the_real_probe_reads_the_sites_managers(tmp_path):
    conf = tmp_path / "trove.conf"
    conf.write_text("[DEFAULT]\ndatastore_registry_ext = redis:site.Redis\n")
    site = reg_mod.probe_site(Path(reg_mod.sys.executable), conf)
    assert set(site.registry_ext) >= {"mysql", "mariadb", "postgresql", "redis"}
    assert site.rules("mariadb") == TROVE_DIR / "templates/mariadb/validation-rules.json"
    site.check_manager("redis", conf)
    with pytest.raises(RegisterError, match="'cassandra' is unknown to this Trove"):
        site.check_manager("cassandra", conf)


# --------------------------------------------------------------------------
# the read-back

def rules_of(manager):
    return json.loads((TROVE_DIR / "templates" / manager / "validation-rules.json").read_text())


def test_check_finds_what_differs(db, manifest_file, trove_manage):
    reg = Registration.from_manifest(mariadb_manifest(), "m")
    do_register(db, manifest_file(), trove_manage, FakeTroveManage(db))
    tdb = TroveDatabase(db.url, db.config)
    good = tdb.snapshot("mariadb")
    empty = {t: [] for t in reg_mod.TABLES}
    assert check(good, empty, reg, rules_of("mariadb")) == []
    with tdb.engine.begin() as conn:
        conn.execute(sa.text("UPDATE datastore_versions SET manager='mysql', active=0"))
        conn.execute(sa.text("UPDATE datastores SET default_version_id=NULL"))
        conn.execute(sa.text("DELETE FROM datastore_configuration_parameters "
                             "WHERE name='max_connections'"))
        conn.execute(sa.text("UPDATE datastore_configuration_parameters SET "
                             "max_size='1' WHERE name='join_buffer_size'"))
    problems = check(tdb.snapshot("mariadb"), empty, reg, rules_of("mariadb"))
    tdb.close()
    assert "datastore_versions.manager is 'mysql', not 'mariadb'" in problems
    assert "datastore_versions.active is False, not True" in problems
    assert any(p.startswith("datastores.default_version_id is None") for p in problems)
    assert "parameter max_connections: not loaded" in problems
    assert any(p.startswith("parameter join_buffer_size: (False, 'integer', '1'")
               for p in problems)


def test_restore_puts_every_row_back(db, manifest_file, trove_manage):
    do_register(db, manifest_file(), trove_manage, FakeTroveManage(db))
    tdb = TroveDatabase(db.url, db.config)
    v_id = tdb.snapshot("mariadb")["datastore_versions"][0]["id"]
    with tdb.engine.begin() as conn:
        conn.execute(sa.text(
            "INSERT INTO datastore_version_metadata (id, datastore_version_id, key, value, "
            "created, deleted) VALUES ('m1', :v, 'flavor', 'f1', :t, 0)").bindparams(
                sa.bindparam("t", type_=sa.DateTime)),     # as Trove's models write it
            {"v": v_id, "t": datetime.datetime(2026, 1, 1, 12, 30)})
    before = tdb.snapshot("mariadb")
    dump = db.dump()
    with tdb.engine.begin() as conn:      # what a half registration leaves
        conn.execute(sa.text("UPDATE datastore_versions SET image_tags='x', active=0"))
        conn.execute(sa.text("DELETE FROM datastore_configuration_parameters "
                             "WHERE name='max_connections'"))
        conn.execute(sa.text("DELETE FROM datastore_version_metadata"))
        conn.execute(sa.text(
            "INSERT INTO datastore_versions (id, datastore_id, name, manager, active, "
            "version, registry_ext, repl_strategy) VALUES ('v2', :d, '12', 'mariadb', 1, "
            "'12', 'x', 'y')"),
            {"d": before["datastores"][0]["id"]})
        conn.execute(sa.text("UPDATE datastores SET default_version_id='v2'"))
        conn.execute(sa.text(
            "INSERT INTO datastore_configuration_parameters (id, name, datastore_version_id,"
            " restart_required, data_type) VALUES ('p', 'x', 'v2', 0, 'string')"))
    assert tdb.restore("mariadb", before) == 6
    tdb.close()
    assert db.dump() == dump


def test_restore_removes_a_datastore_that_was_not_there(db, manifest_file, trove_manage):
    dump = db.dump()
    tdb = TroveDatabase(db.url, db.config)
    before = tdb.snapshot("mariadb")
    do_register(db, manifest_file(), trove_manage, FakeTroveManage(db))
    assert db.dump() != dump
    tdb.restore("mariadb", before)
    tdb.close()
    assert db.dump() == dump


# --------------------------------------------------------------------------
# register, with the fake trove-manage

def test_register_runs_the_commands_and_reads_the_rows_back(db, manifest_file, trove_manage):
    fake = FakeTroveManage(db)
    result = do_register(db, manifest_file(), trove_manage, fake)
    rules = str(TROVE_DIR / "templates/mariadb/validation-rules.json")
    version_id = result.pop("version_id")
    assert fake.calls == [
        ["datastore_update", "mariadb", ""],
        ["datastore_version_update", "mariadb", "11.8", "mariadb", "", "", "1",
         "--image-tags", "trove,mariadb,mariadb-11.8", "--version", "11.8"],
        ["datastore_update", "mariadb", version_id],
        ["db_load_datastore_config_parameters", "mariadb", "11.8", rules, "--version",
         "11.8"]]
    seconds = result.pop("seconds")
    assert 0 <= seconds < 30
    assert result == {"datastore": "mariadb", "version_name": "11.8", "version": "11.8",
                      "manager": "mariadb", "image_id": None,
                      "image_tags": ["trove", "mariadb", "mariadb-11.8"], "packages": "",
                      "active": True, "default": True,
                      "parameters_loaded": len(rules_of("mariadb")["configuration-parameters"]),
                      "validation_rules": rules}


def test_an_existing_datastore_is_not_emptied_of_its_default(db, manifest_file, trove_manage):
    do_register(db, manifest_file(), trove_manage, FakeTroveManage(db))
    old_default = db.rows("SELECT default_version_id FROM datastores")[0]["default_version_id"]
    fake = FakeTroveManage(db)
    result = do_register(db, manifest_file(mariadb_manifest(version="12.0")), trove_manage,
                         fake, default=False)
    assert [c[0] for c in fake.calls] == ["datastore_version_update",
                                          "db_load_datastore_config_parameters"]
    assert result["default"] is False
    assert db.rows("SELECT default_version_id FROM datastores")[0]["default_version_id"] \
        == old_default
    assert len(db.rows("SELECT id FROM datastore_versions")) == 2


@pytest.mark.parametrize("existing, step", [(False, 1), (False, 2), (False, 3), (False, 4),
                                            (True, 1), (True, 2), (True, 3)])
def test_a_failed_step_leaves_the_tables_as_they_were(
        db, manifest_file, trove_manage, existing, step):
    """Four commands for a new datastore, three for an existing one."""
    if existing:      # another version, the default, with its parameters
        do_register(db, manifest_file(mariadb_manifest(version="10.11")), trove_manage,
                    FakeTroveManage(db))
    dump = db.dump()
    fake = FakeTroveManage(db, fail_at=step)
    with pytest.raises(RegisterError) as raised:
        do_register(db, manifest_file(), trove_manage, fake)
    assert len(fake.calls) == step
    assert raised.value.message.startswith(f"trove-manage {fake.calls[-1][0]}: command failed")
    assert raised.value.message.endswith("; Trove's datastore tables were restored as they were")
    assert db.dump() == dump


@pytest.mark.parametrize("step", [1, 2, 3, 4])
def test_trove_manage_exiting_0_without_doing_it_is_caught(db, manifest_file, trove_manage,
                                                           step):
    dump = db.dump()
    fake = FakeTroveManage(db, silent_at=step)
    with pytest.raises(RegisterError, match=rf"trove-manage {fake_step_name(step)} exited 0 "
                       r"but did not do it \(Datastore 'x' cannot be found.\): .*restored"):
        do_register(db, manifest_file(), trove_manage, fake)
    assert db.dump() == dump


def fake_step_name(step):
    return {1: "datastore_update", 2: "datastore_version_update", 3: "datastore_update",
            4: "db_load_datastore_config_parameters"}[step]


def test_an_interruption_is_rolled_back_too(db, manifest_file, trove_manage):
    dump = db.dump()
    fake = FakeTroveManage(db)

    def interrupted(argv, **kw):
        result = fake(argv, **kw)
        if len(fake.calls) == 2:
            raise KeyboardInterrupt
        return result
    with pytest.raises(KeyboardInterrupt):
        do_register(db, manifest_file(), trove_manage, interrupted)
    assert db.dump() == dump


def test_an_unknown_manager_is_refused_before_any_write(db, manifest_file, trove_manage):
    dump = db.dump()
    fake = FakeTroveManage(db)
    with pytest.raises(RegisterError, match="datastore manager 'cassandra' is unknown"):
        do_register(db, manifest_file(mariadb_manifest(manager="cassandra")), trove_manage,
                    fake)
    assert fake.calls == []
    assert db.dump() == dump


# --------------------------------------------------------------------------
# the command line

def test_cli_config_file_missing(manifest_file, tmp_path):
    result = invoke("register", str(manifest_file()), "--config-file",
                    str(tmp_path / "nope.conf"))
    assert_error(result, f"{tmp_path / 'nope.conf'}: no such config file", 2)


def test_cli_trove_manage_missing(manifest_file, db, tmp_path):
    result = invoke("register", str(manifest_file()), "--config-file", str(db.config),
                    "--trove-manage", str(tmp_path / "no-trove-manage"))
    assert_error(result, f"{tmp_path / 'no-trove-manage'}: no such executable", 3)


def test_cli_trove_manage_not_on_path(manifest_file, db, monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    result = invoke("register", str(manifest_file()), "--config-file", str(db.config))
    assert_error(result, "trove-manage: no such executable on PATH; name it with "
                 "--trove-manage", 3)


def test_cli_image_without_a_datastore(manifest_file, db):
    path = manifest_file({"schema": 2, "image": {}, "datastore": None})
    result = invoke("register", str(path), "--config-file", str(db.config))
    assert_error(result, f"{path}: the image holds no datastore: nothing to register", 2)


def test_cli_database_not_migrated(manifest_file, tmp_path):
    empty = tmp_path / "empty.sqlite"
    sa.create_engine(f"sqlite:///{empty}").connect().close()
    conf = trove_db.write_config(tmp_path / "trove.conf", f"sqlite:///{empty}")
    result = invoke("register", str(manifest_file()), "--config-file", str(conf),
                    "--trove-manage", "/bin/true")
    tables = ", ".join(reg_mod.TABLES)
    assert_error(result, f"Trove's database sqlite:///{empty} has no {tables} table: not "
                 f"migrated; run 'trove-manage --config-file {conf} db_sync'", 1)


def test_cli_database_unreachable(manifest_file, tmp_path):
    conf = trove_db.write_config(
        tmp_path / "trove.conf",
        f"mysql+pymysql://trove:secret@localhost/trove?unix_socket={tmp_path}/none.sock")
    result = invoke("register", str(manifest_file()), "--config-file", str(conf),
                    "--trove-manage", "/bin/true")
    assert result.exit_code == 1, result.output
    line = result.stderr.strip()
    assert "\n" not in line and "secret" not in line
    assert line.startswith("Error: cannot reach Trove's database "
                           "mysql+pymysql://trove:***@localhost/trove")
    assert line.endswith(f"run 'trove-manage --config-file {conf} db_sync' once it answers")


def test_cli_unknown_manager(manifest_file, db):
    result = invoke("register", str(manifest_file(mariadb_manifest(manager="cassandra"))),
                    "--config-file", str(db.config), "--trove-manage", "/bin/true")
    assert result.exit_code == 1
    assert result.stderr.startswith("Error: datastore manager 'cassandra' is unknown to "
                                    "this Trove (it knows mariadb, mysql, postgresql")
    assert result.stderr.count("\n") == 1


def test_cli_prints_the_result_as_json(manifest_file, db, trove_manage, monkeypatch):
    monkeypatch.setattr(reg_mod, "run_command", FakeTroveManage(db))
    result = invoke("register", str(manifest_file()), "--config-file", str(db.config),
                    "--trove-manage", str(trove_manage), "--image-id", "IMG")
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert (out["datastore"], out["image_id"], out["default"]) == ("mariadb", "IMG", True)
    assert "trove-manage datastore_version_update mariadb 11.8" in result.stderr
