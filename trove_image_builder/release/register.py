"""Register an image's datastore version in Trove, with the site's own
trove-manage, then read the result back from Trove's database.

What runs is what upstream runs (Trove 26.0.0: devstack/plugin.sh and
integration/scripts/trovestack ``cmd_set_datastore``)::

    trove-manage datastore_update DS ""                      (a new datastore only)
    trove-manage datastore_version_update DS NAME MANAGER IMAGE_ID PACKAGES ACTIVE \\
        --image-tags trove,DS,DS-VERSION --version VERSION
    trove-manage datastore_update DS VERSION_ID              (unless --no-default)
    trove-manage db_load_datastore_config_parameters DS NAME RULES --version VERSION

trove-manage's exit code is not trusted: it prints some errors and exits 0
(trove/cmd/manage.py catches DatastoreNotFound and DatastoreVersionNotFound),
and each of its commands, and each parameter it loads, is a commit of its own
(trove/db/sqlalchemy/api.py ``save``). So the rows of Trove's datastore
tables for this datastore are read before; each step's effect and the final
result are read back; and on any failure the rows are put back as they were,
in one transaction.
"""
from dataclasses import dataclass
import configparser
import json
import os
from pathlib import Path
import shutil
import sys
import time

import sqlalchemy as sa

from ..errors import BuildError, HostError, InputError, TroveImageBuilderError
from ..plumbing import log
from ..plumbing.runner import replay_line, run as run_command
from . import glance, manifests

# Trove's datastore tables, parents first (trove/db/sqlalchemy/migrations/
# versions/906cffda7b29_init_trove_db.py). Only these are read and restored.
TABLES = ("datastores", "datastore_versions", "datastore_configuration_parameters",
          "datastore_version_metadata")

# Trove 26.0.0's managers with a guest agent (trove/common/constants.py
# REGISTRY_EXT_DEFAULTS), used when the site's Trove cannot be asked.
TROVE_26_MANAGERS = ("mariadb", "mysql", "postgresql")

STEP_TIMEOUT = 600


class RegisterError(TroveImageBuilderError):
    """A registration was refused, or failed and was rolled back. Exit code 1."""


@dataclass(frozen=True)
class Registration:
    """One datastore version, as it is given to trove-manage."""

    datastore: str
    version_name: str
    version: str
    manager: str
    image_id: str              # "" when the image is found by its tags
    image_tags: tuple
    packages: str
    active: bool
    default: bool

    @classmethod
    def from_manifest(cls, manifest: dict, where: str, image_id: str | None = None,
                      version_name: str | None = None, default: bool = True,
                      active: bool = True) -> "Registration":
        ds = manifest.get("datastore")
        if ds:
            name, manager, version = ds.get("name"), ds.get("manager"), ds.get("version")
            runtime, package = ds.get("runtime"), ds.get("package")
        else:       # a manifest with only its contract section
            c = manifest.get("contract") or {}
            name, manager, version = (c.get("datastore"), c.get("datastore_manager"),
                                      c.get("datastore_version"))
            runtime, package = c.get("datastore_runtime"), c.get("server_package")
        if not name:
            raise InputError(f"{where}: the image holds no datastore: nothing to register")
        contract = manifest.get("contract") or {}
        agent = (manifest.get("guest_agent") or {}).get("version") or \
            contract.get("agent_version")
        if not agent:
            raise InputError(f"{where}: the image has no guest agent: Trove cannot run "
                             "a datastore on it; nothing to register")
        if not manager or not version:
            raise InputError(f"{where}: datastore {name}: no "
                             f"{'manager' if not manager else 'version'} in the manifest")
        if not active and default:
            # trove/datastore/models.py update_datastore: DatastoreVersionInactive
            raise InputError("an inactive version cannot be the datastore's default: "
                             "add --no-default")
        # Trove 26's agents receive packages in prepare and install nothing
        # (trove/guestagent/datastore/manager.py do_prepare); devstack passes "".
        # For a server installed from OS packages, name it, for the record.
        packages = (package or "") if runtime == "package" else ""
        return cls(datastore=name, version_name=version_name or str(version),
                   version=str(version), manager=manager, image_id=image_id or "",
                   image_tags=tuple(glance.tags_for(
                       agent=True, variant=(manifest.get("profile") or {}).get("variant")
                       or contract.get("variant"), datastore=name, version=str(version))),
                   packages=packages,
                   active=active, default=default)


# -- the commands -------------------------------------------------------------

def create_datastore_argv(reg: Registration) -> list[str]:
    """trove-manage datastore_update DS "": creates the datastore without a
    default. Only for a new datastore: on an existing one it clears the
    default (trove/datastore/models.py update_datastore)."""
    return ["datastore_update", reg.datastore, ""]


def version_argv(reg: Registration) -> list[str]:
    """trove-manage datastore_version_update (trove/cmd/manage.py): creates
    the version, or updates the one with this name and version number."""
    return ["datastore_version_update", reg.datastore, reg.version_name, reg.manager,
            reg.image_id, reg.packages, "1" if reg.active else "0",
            "--image-tags", ",".join(reg.image_tags), "--version", reg.version]


def default_argv(reg: Registration, version_id: str) -> list[str]:
    """By id: a name may be shared by versions of different numbers, which
    DatastoreVersion.load refuses by name (DatastoreVersionsNoUniqueMatch)."""
    return ["datastore_update", reg.datastore, version_id]


def parameters_argv(reg: Registration, rules: Path) -> list[str]:
    return ["db_load_datastore_config_parameters", reg.datastore, reg.version_name,
            str(rules), "--version", reg.version]


# -- the site: its trove-manage, its config, its Trove ---------------------------

def find_trove_manage(path: str | None) -> Path:
    name = path or "trove-manage"
    found = shutil.which(name) if os.sep not in name else (
        name if os.path.isfile(name) and os.access(name, os.X_OK) else None)
    if not found:
        raise HostError(f"{name}: no such executable"
                        + ("" if path else " on PATH; name it with --trove-manage"))
    return Path(found)


def read_config(config_file) -> str:
    """The [database] connection of Trove's config file."""
    path = Path(config_file)
    if not path.is_file():
        raise InputError(f"{path}: no such config file")
    parser = configparser.ConfigParser(interpolation=None, strict=False)
    try:
        parser.read(path)
    except (configparser.Error, OSError) as exc:
        raise InputError(f"{path}: unreadable ({exc})") from None
    url = parser.get("database", "connection", fallback="").strip()
    if not url:
        raise InputError(f"{path}: no [database] connection")
    return url


@dataclass(frozen=True)
class TroveSite:
    """What the site's Trove knows, asked of its own Python."""

    trove_dir: Path | None
    registry_ext: dict            # manager -> guest manager class
    configured: tuple             # managers with Trove options (replication)

    def check_manager(self, manager: str, config_file) -> None:
        if manager not in self.registry_ext:
            raise RegisterError(
                f"datastore manager {manager!r} is unknown to this Trove (it knows "
                f"{', '.join(sorted(self.registry_ext))}; others are added with "
                f"[DEFAULT] datastore_registry_ext in {config_file})")
        if self.configured and manager not in self.configured:
            # trove/datastore/models.py update_datastore_version reads
            # CONF.<manager>.replication_strategy: NoSuchOptError otherwise
            raise RegisterError(f"datastore manager {manager!r} has no [{manager}] options "
                                "in this Trove; trove-manage cannot register it")

    def rules(self, manager: str) -> Path | None:
        """trove/templates/<manager>/validation-rules.json, as upstream loads
        it (devstack/plugin.sh; templates are kept by manager,
        trove/common/template.py)."""
        if self.trove_dir is None:
            return None
        path = self.trove_dir / "templates" / manager / "validation-rules.json"
        return path if path.is_file() else None


# Run by the Python of the site's trove-manage: where its trove package is,
# the managers it knows (trove/common/constants.py REGISTRY_EXT_DEFAULTS and
# [DEFAULT] datastore_registry_ext, as trove/guestagent/dbaas.py merges them)
# and the option groups with replication options (trove/common/cfg.py).
PROBE = """\
import json, os, sys, warnings
warnings.simplefilter("ignore")
from oslo_config import cfg as oslo
import trove
from trove.common import cfg, constants
conf = cfg.CONF
conf(["--config-file", sys.argv[1]], project="trove", default_config_files=[])
ext = dict(constants.REGISTRY_EXT_DEFAULTS)
ext.update(conf.datastore_registry_ext or {})
groups = [g for g in conf if isinstance(getattr(conf, g, None), oslo.ConfigOpts.GroupAttr)
          and "replication_strategy" in conf[g] and "replication_namespace" in conf[g]]
print(json.dumps({"trove_dir": os.path.dirname(trove.__file__), "registry_ext": ext,
                  "configured": sorted(groups)}))
"""


def python_of(trove_manage: Path) -> str:
    """The interpreter of a Python console script; ours for anything else
    (a shell wrapper, say)."""
    try:
        with open(trove_manage, "rb") as fh:
            first = fh.readline(512).decode(errors="replace").strip()
    except OSError:
        first = ""
    if first.startswith("#!") and "python" in first:
        interpreter = first[2:].split()
        if interpreter and os.path.basename(interpreter[0]) != "env":
            return interpreter[0]
    return sys.executable


def probe_site(trove_manage: Path, config_file, runner=run_command) -> TroveSite:
    python = python_of(trove_manage)
    proc = runner([python, "-c", PROBE, str(config_file)], check=False, timeout=120)
    if proc.returncode == 0:
        try:
            found = json.loads(proc.stdout.strip().splitlines()[-1])
            return TroveSite(Path(found["trove_dir"]), found["registry_ext"],
                             tuple(found["configured"]))
        except (ValueError, KeyError, IndexError):
            pass
    log.info(f"{python} cannot import trove: Trove 26.0.0's managers are assumed, "
             "and no validation rules are loaded")
    parser = configparser.ConfigParser(interpolation=None, strict=False)
    parser.read(config_file)
    ext = {m: "" for m in TROVE_26_MANAGERS}
    for item in parser.get("DEFAULT", "datastore_registry_ext", fallback="").split(","):
        if ":" in item:
            key, value = item.split(":", 1)
            ext[key.strip()] = value.strip()
    return TroveSite(None, ext, ())


# -- Trove's database --------------------------------------------------------------

class TroveDatabase:
    """Trove's datastore tables, read and restored with SQLAlchemy."""

    def __init__(self, url: str, config_file=None):
        try:
            self.engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
        except Exception as exc:   # a bad URL, a driver not installed
            raise RegisterError(f"{config_file}: [database] connection: {exc}") from None
        self.where = self.engine.url.render_as_string(hide_password=True)
        db_sync = f"run 'trove-manage --config-file {config_file} db_sync'"
        database = self.engine.url.database
        if self.engine.url.get_backend_name() == "sqlite" and database not in (
                None, "", ":memory:") and not Path(database).is_file():
            # SQLite would make an empty file
            raise RegisterError(f"Trove's database {self.where}: no such file; {db_sync}")
        meta = sa.MetaData()
        try:
            meta.reflect(self.engine, only=lambda name, _meta: name in TABLES)
        except sa.exc.SQLAlchemyError as exc:
            raise RegisterError(f"cannot reach Trove's database {self.where} "
                                f"({_first_line(exc)}); check [database] connection in "
                                f"{config_file}, and {db_sync} once it answers") from None
        missing = [t for t in TABLES if t not in meta.tables]
        if missing:
            raise RegisterError(f"Trove's database {self.where} has no {', '.join(missing)} "
                                f"table: not migrated; {db_sync}")
        self.tables = {name: meta.tables[name] for name in TABLES}

    def close(self):
        self.engine.dispose()

    def _rows(self, conn, name, where):
        table = self.tables[name]
        return [dict(r) for r in conn.execute(
            sa.select(table).where(where(table))).mappings()]

    def snapshot(self, datastore: str) -> dict:
        """{table: [row, ...]}: the datastore's row, its versions, and their
        parameters and metadata."""
        try:
            with self.engine.connect() as conn:
                return self._snapshot(conn, datastore)
        except sa.exc.SQLAlchemyError as exc:
            raise RegisterError(f"reading Trove's database {self.where}: "
                                f"{_first_line(exc)}") from None

    def _snapshot(self, conn, datastore):
        ds = self._rows(conn, "datastores", lambda t: t.c.name == datastore)
        ds_ids = [r["id"] for r in ds]
        versions = self._rows(conn, "datastore_versions",
                              lambda t: t.c.datastore_id.in_(ds_ids))
        v_ids = [r["id"] for r in versions]
        return {"datastores": ds, "datastore_versions": versions,
                "datastore_configuration_parameters": self._rows(
                    conn, "datastore_configuration_parameters",
                    lambda t: t.c.datastore_version_id.in_(v_ids)),
                "datastore_version_metadata": self._rows(
                    conn, "datastore_version_metadata",
                    lambda t: t.c.datastore_version_id.in_(v_ids))}

    def restore(self, datastore: str, before: dict) -> int:
        """Put the datastore's rows back as they were in before, in one
        transaction; the number of rows deleted, inserted or updated."""
        changed = 0
        with self.engine.begin() as conn:
            now = self._snapshot(conn, datastore)
            plan = {name: _differences(self.tables[name], before[name], now[name])
                    for name in TABLES}
            for name in TABLES:                     # rows changed: their old values
                table = self.tables[name]
                for row in plan[name]["update"]:
                    conn.execute(table.update().where(_key_clause(table, row)).values(**row))
                    changed += 1
            for name in reversed(TABLES):           # rows added: children first
                table = self.tables[name]
                for row in plan[name]["delete"]:
                    conn.execute(table.delete().where(_key_clause(table, row)))
                    changed += 1
            for name in TABLES:                     # rows removed: parents first
                if plan[name]["insert"]:
                    conn.execute(self.tables[name].insert(), plan[name]["insert"])
                    changed += len(plan[name]["insert"])
        return changed


def _key(table, row) -> tuple:
    return tuple(row[c.name] for c in table.primary_key.columns)


def _key_clause(table, row):
    return sa.and_(*(c == row[c.name] for c in table.primary_key.columns))


def _differences(table, before: list, now: list) -> dict:
    old = {_key(table, r): r for r in before}
    new = {_key(table, r): r for r in now}
    return {"delete": [new[k] for k in new.keys() - old.keys()],
            "insert": [old[k] for k in old.keys() - new.keys()],
            "update": [old[k] for k in old.keys() & new.keys() if old[k] != new[k]]}


def _first_line(exc) -> str:
    text = str(getattr(exc, "orig", None) or exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


# -- reading the result back ----------------------------------------------------------

def version_row(snapshot: dict, reg: Registration) -> dict | None:
    """The version row trove-manage finds by datastore, name and number
    (trove/datastore/models.py update_datastore_version)."""
    ds = snapshot["datastores"]
    if not ds:
        return None
    rows = [r for r in snapshot["datastore_versions"]
            if r["datastore_id"] == ds[0]["id"] and r["name"] == reg.version_name
            and r["version"] == reg.version]
    return rows[0] if len(rows) == 1 else None


def _number(value) -> str | None:
    return None if value is None else str(value)


def check(snapshot: dict, before: dict, reg: Registration, rules: dict | None) -> list[str]:
    """What in Trove's rows differs from the registration; empty when all is
    there."""
    problems = []
    if len(snapshot["datastores"]) != 1:
        return [f"datastore {reg.datastore!r}: not in the datastores table"]
    ds = snapshot["datastores"][0]
    row = version_row(snapshot, reg)
    if row is None:
        return [f"datastore version {reg.version_name} ({reg.version}): not in the "
                "datastore_versions table"]
    expected = {"manager": reg.manager, "image_id": reg.image_id,
                "image_tags": ",".join(reg.image_tags), "packages": reg.packages,
                "active": reg.active}
    for column, value in expected.items():
        found = row[column]
        if column == "active":
            found = bool(found)
        elif column in ("image_id", "packages"):
            found = found or ""
        if found != value:
            problems.append(f"datastore_versions.{column} is {found!r}, not {value!r}")
    if not row.get("registry_ext"):
        problems.append("datastore_versions.registry_ext is empty: Trove's guest would "
                        "not find a manager")
    old_default = before["datastores"][0]["default_version_id"] if before["datastores"] \
        else None
    want_default = row["id"] if reg.default else old_default
    if ds["default_version_id"] != want_default:
        problems.append(f"datastores.default_version_id is {ds['default_version_id']!r}, "
                        f"not {want_default!r}")
    if rules is not None:
        loaded = {r["name"]: r for r in snapshot["datastore_configuration_parameters"]
                  if r["datastore_version_id"] == row["id"]}
        for param in rules["configuration-parameters"]:
            got = loaded.get(param["name"])
            if got is None:
                problems.append(f"parameter {param['name']}: not loaded")
                continue
            want = (bool(param["restart_required"]), param["type"],
                    _number(param.get("max")), _number(param.get("min")))
            have = (bool(got["restart_required"]), got["data_type"],
                    _number(got["max_size"]), _number(got["min_size"]))
            if want != have:
                problems.append(f"parameter {param['name']}: {have}, not {want}")
    return problems


def parameters_loaded(snapshot: dict, reg: Registration) -> int:
    row = version_row(snapshot, reg)
    return 0 if row is None else sum(
        1 for r in snapshot["datastore_configuration_parameters"]
        if r["datastore_version_id"] == row["id"])


# -- the whole -------------------------------------------------------------------------

def _checked(image_or_manifest_path, config_file, image_id, version_name, default, active,
             trove_manage, runner):
    """Everything checked before anything is written: the manifest, the
    config file, trove-manage, the manager known to the site's Trove, its
    database reachable and migrated."""
    path = Path(image_or_manifest_path)
    _, manifest, manifest_file = manifests.load(path)
    where = str(manifest_file)
    reg = Registration.from_manifest(manifest, where, image_id, version_name, default, active)
    url = read_config(config_file)
    tm = find_trove_manage(trove_manage)
    site = probe_site(tm, config_file, runner)
    site.check_manager(reg.manager, config_file)
    return reg, tm, site.rules(reg.manager), TroveDatabase(url, config_file)


def preflight(image_or_manifest_path, config_file, trove_manage: str | None = None,
              runner=None) -> None:
    """What register checks before it writes, alone (publish --register
    runs it before the upload); raises as register would."""
    *_, db = _checked(image_or_manifest_path, config_file, None, None, True, True,
                      trove_manage, runner or run_command)
    db.close()


def register(image_or_manifest_path, config_file, image_id: str | None = None,
             version_name: str | None = None, default: bool = True, active: bool = True,
             trove_manage: str | None = None, runner=None) -> dict:
    """Register the image's datastore version in Trove; the result, as read
    back from Trove's database. Raises RegisterError (with Trove's tables
    as they were) when it cannot. runner: plumbing.runner.run's stand-in."""
    start = time.monotonic()
    runner = runner or run_command
    reg, tm, rules_path, db = _checked(image_or_manifest_path, config_file, image_id,
                                       version_name, default, active, trove_manage, runner)
    rules = json.loads(rules_path.read_text()) if rules_path else None
    try:
        with log.step(f"register {reg.datastore} {reg.version_name} ({reg.version}) "
                      f"in {db.where}"):
            before = db.snapshot(reg.datastore)
            try:
                after = _apply(db, reg, before, tm, config_file, rules_path, rules, runner)
            except BaseException as exc:
                _roll_back(db, reg, before, exc)
                raise
    finally:
        db.close()
    row = version_row(after, reg)
    return {"datastore": reg.datastore, "version_name": reg.version_name,
            "version": reg.version, "version_id": row["id"], "manager": reg.manager,
            "image_id": reg.image_id or None, "image_tags": list(reg.image_tags),
            "packages": reg.packages, "active": reg.active,
            "default": after["datastores"][0]["default_version_id"] == row["id"],
            "parameters_loaded": parameters_loaded(after, reg),
            "validation_rules": str(rules_path) if rules_path else None,
            "seconds": round(time.monotonic() - start, 1)}


def _apply(db, reg, before, tm, config_file, rules_path, rules, runner) -> dict:
    def manage(argv, expect):
        full = [tm, "--config-file", config_file, *argv]
        log.info("trove-manage " + " ".join(repr(a) if a == "" else str(a) for a in argv))
        try:
            proc = runner(full, timeout=STEP_TIMEOUT)
        except BuildError as exc:
            raise RegisterError(f"trove-manage {argv[0]}: {exc.message}") from None
        now = db.snapshot(reg.datastore)
        if not expect(now):
            said = (proc.stdout or "").strip().splitlines()[-1:]
            raise RegisterError(f"trove-manage {argv[0]} exited 0 but did not do it"
                                + (f" ({said[0]})" if said else "")
                                + f": {replay_line(full)}")
        return now

    if not before["datastores"]:
        manage(create_datastore_argv(reg), lambda s: bool(s["datastores"]))
    now = manage(version_argv(reg), lambda s: version_row(s, reg) is not None)
    if reg.default:
        version_id = version_row(now, reg)["id"]
        manage(default_argv(reg, version_id),
               lambda s: s["datastores"][0]["default_version_id"] == version_id)
    if rules_path is not None:
        manage(parameters_argv(reg, rules_path),
               lambda s: parameters_loaded(s, reg) >= len(rules["configuration-parameters"]))
    after = db.snapshot(reg.datastore)
    problems = check(after, before, reg, rules)
    if problems:
        raise RegisterError("Trove's tables do not hold the registration: "
                            + "; ".join(problems[:3])
                            + (f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""))
    return after


def _roll_back(db, reg, before, exc) -> None:
    """Trove's rows as they were; the error says so."""
    try:
        changed = db.restore(reg.datastore, before)
    except Exception as undo:   # the registration's error matters more; say both
        log.info(f"rollback failed: {_first_line(undo)}")
        if isinstance(exc, TroveImageBuilderError):
            exc.message += (f"; ROLLBACK FAILED ({_first_line(undo)}): Trove's rows for "
                            f"datastore {reg.datastore} may be half registered")
            exc.args = (exc.message,)
        return
    log.info(f"rolled back: {changed} row(s) of Trove's datastore tables restored")
    if isinstance(exc, TroveImageBuilderError):
        exc.message += "; Trove's datastore tables were restored as they were"
        exc.args = (exc.message,)
