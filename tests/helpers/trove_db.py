"""Real Trove databases for the tests, made by Trove's own
``trove-manage db_sync`` (the trove package in .venv, 26.0.x).

- SQLite: migrated once per session (about 2 s), copied per test.
  Trove 26 cannot load MariaDB's or MySQL's validation rules into SQLite: a
  few of their maxima exceed 2**63 - 1 and Trove hands them to the VARCHAR
  columns as Python ints, which sqlite3 cannot bind (OverflowError). The
  PostgreSQL rules load.
- MariaDB: a private mariadbd (Debian's mariadb-server-core) on a socket in
  a temporary folder, no TCP; migrated once into a template database, which
  is cloned, foreign keys and all, per test. The database Trove runs on in
  production.

``TroveDB.dump()`` reads the datastore tables with plain SQL, not through
the code under test.
"""
from dataclasses import dataclass
import os
from pathlib import Path
import shutil
import subprocess
import sys
import time

import sqlalchemy as sa

TROVE_MANAGE = Path(sys.executable).with_name("trove-manage")
TABLES = ("datastores", "datastore_versions", "datastore_configuration_parameters",
          "datastore_version_metadata")


@dataclass
class TroveDB:
    config: Path          # a trove.conf naming the database
    url: str

    def engine(self):
        return sa.create_engine(self.url, poolclass=sa.pool.NullPool)

    def dump(self) -> dict:
        """{table: sorted rows as tuples}: every row of the datastore tables."""
        engine = self.engine()
        try:
            with engine.connect() as conn:
                return {t: sorted(tuple(str(v) for v in row) for row in
                                  conn.execute(sa.text(f"SELECT * FROM {t}")))
                        for t in TABLES}
        finally:
            engine.dispose()

    def rows(self, sql: str, **params) -> list[dict]:
        engine = self.engine()
        try:
            with engine.connect() as conn:
                return [dict(r) for r in conn.execute(sa.text(sql), params).mappings()]
        finally:
            engine.dispose()


def write_config(path: Path, url: str) -> Path:
    """A trove.conf with what trove-manage needs for the datastore commands."""
    path.write_text(f"[DEFAULT]\n\n[database]\nconnection = {url}\n")
    return path


def db_sync(config: Path) -> float:
    """trove-manage db_sync, for real; its seconds."""
    start = time.monotonic()
    proc = subprocess.run([str(TROVE_MANAGE), "--config-file", str(config), "db_sync"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return time.monotonic() - start


def migrated_sqlite(folder: Path) -> Path:
    """A SQLite file migrated by db_sync (once: the caller caches it)."""
    db = folder / "template.sqlite"
    db_sync(write_config(folder / "template.conf", f"sqlite:///{db}"))
    return db


def sqlite_db(folder: Path, template: Path) -> TroveDB:
    """A fresh copy of the migrated SQLite database, and its trove.conf."""
    folder.mkdir(parents=True, exist_ok=True)
    db = folder / "trove.sqlite"
    shutil.copyfile(template, db)
    url = f"sqlite:///{db}"
    return TroveDB(write_config(folder / "trove.conf", url), url)


class MariaDB:
    """A mariadbd of the tests' own: root over a socket in folder."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.socket = folder / "mysqld.sock"
        self.proc = None
        self.count = 0

    @staticmethod
    def available() -> bool:
        return bool(shutil.which("mariadbd", path="/usr/sbin:/usr/bin:" + os.environ["PATH"])
                    and shutil.which("mariadb-install-db"))

    def url(self, database: str) -> str:
        return f"mysql+pymysql://root@localhost/{database}?unix_socket={self.socket}" \
               "&charset=utf8mb4"

    def start(self) -> "MariaDB":
        data = self.folder / "data"
        install = subprocess.run(
            ["mariadb-install-db", "--no-defaults", f"--datadir={data}", "--user=root",
             "--auth-root-authentication-method=normal", "--skip-test-db"],
            capture_output=True, text=True, timeout=300)
        assert install.returncode == 0, install.stdout[-2000:] + install.stderr[-2000:]
        mariadbd = shutil.which("mariadbd", path="/usr/sbin:/usr/bin:" + os.environ["PATH"])
        self.proc = subprocess.Popen(
            [mariadbd, "--no-defaults", f"--datadir={data}", f"--socket={self.socket}",
             "--skip-networking", "--user=root", f"--pid-file={self.folder / 'pid'}",
             f"--log-error={self.folder / 'error.log'}"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while True:
            try:
                self.execute("information_schema", "SELECT 1")
                break
            except sa.exc.OperationalError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    log = (self.folder / "error.log")
                    raise AssertionError("mariadbd did not start: "
                                         + (log.read_text()[-2000:] if log.exists() else ""))
                time.sleep(0.1)
        self.execute("information_schema", "CREATE DATABASE template")
        db_sync(write_config(self.folder / "template.conf", self.url("template")))
        return self

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def execute(self, database: str, *statements) -> list:
        engine = sa.create_engine(self.url(database), poolclass=sa.pool.NullPool)
        try:
            with engine.begin() as conn:
                results = [conn.execute(sa.text(s)) for s in statements]
                return [r.fetchall() if r.returns_rows else None for r in results]
        finally:
            engine.dispose()

    def database(self, folder: Path) -> TroveDB:
        """A new database, a clone of the migrated template (its tables,
        with their keys and foreign keys, and its rows)."""
        self.count += 1
        name = f"trove{self.count}"
        tables = [r[0] for r in self.execute("template", "SHOW TABLES")[0]]
        creates = [self.execute("template", f"SHOW CREATE TABLE `{t}`")[0][0][1]
                   for t in tables]
        self.execute("information_schema", f"CREATE DATABASE {name}")
        self.execute(name, "SET FOREIGN_KEY_CHECKS=0", *creates,
                     *(f"INSERT INTO `{t}` SELECT * FROM template.`{t}`" for t in tables))
        folder.mkdir(parents=True, exist_ok=True)
        return TroveDB(write_config(folder / "trove.conf", self.url(name)), self.url(name))
