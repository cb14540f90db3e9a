"""The datastore images built here from Debian and Ubuntu packages, loaded into a real
Docker engine and run exactly as Trove 26's guest agent runs them: its own
start_container() with the parameters start_db() passes (name, user
1001:1001, environment, mounts with a configuration rendered from Trove's
own template, health check, command), then the agent's connections, a
restart, and the commands it runs with 'docker exec'.

The engine is a dockerd of the test's own (Debian's docker.io): its own
data and exec roots, socket and bridge, no iptables rules, so the host is
not touched; it is stopped and everything removed at the end."""
import contextlib
import json
import os
from pathlib import Path
import shutil
import socket
import subprocess
import tempfile
import time
from types import SimpleNamespace
import uuid

import docker as docker_py
import psycopg2
import pymysql
import pytest
from trove.common import constants, template
from trove.guestagent.common import sql_query
from trove.guestagent.datastore.mariadb import manager as mariadb_manager
from trove.guestagent.datastore.mariadb import service as mariadb_service
from trove.guestagent.datastore.mysql import manager as mysql_manager
from trove.guestagent.datastore.mysql import service as mysql_service
from trove.guestagent.datastore.postgres import service as pg_service
from trove.guestagent.utils import docker as docker_util

from trove_image_builder.build import datastore_image, images
from trove_image_builder.plumbing.cleanup import release_workdir
from trove_image_builder.plumbing.runner import stop

pytestmark = pytest.mark.integration

UID = GID = 1001             # database_service_uid/gid default (trove/common/cfg.py)
HEALTHY_WITHIN = 300         # seconds


class Engine:
    """A dockerd of our own, reached through its socket."""

    def __init__(self, root: Path, bridge: str):
        self.root, self.bridge = root, bridge
        self.socket = root / "docker.sock"
        self.cli = "/usr/bin/docker" if Path("/usr/bin/docker").exists() else "docker"
        self.proc = None
        self.client = None

    def start(self):
        log = open(self.root / "dockerd.log", "w")
        self.proc = subprocess.Popen(
            ["dockerd", "--data-root", str(self.root / "data"),
             "--exec-root", str(self.root / "exec"), "-H", f"unix://{self.socket}",
             "--pidfile", str(self.root / "dockerd.pid"), "--bridge", self.bridge,
             "--iptables=false", "--ip-masq=false", "--ip6tables=false",
             "--containerd-namespace", f"{self.bridge}",
             "--containerd-plugins-namespace", f"{self.bridge}-plugins"],
            stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while self.docker("version", check=False).returncode != 0:
            assert self.proc.poll() is None, self.log_tail()
            assert time.monotonic() < deadline, self.log_tail()
            time.sleep(0.5)
        self.client = docker_py.DockerClient(base_url=f"unix://{self.socket}",
                                             version="auto")

    def docker(self, *args, check=True) -> subprocess.CompletedProcess:
        proc = subprocess.run([self.cli, "-H", f"unix://{self.socket}", *args],
                              capture_output=True, text=True, timeout=600)
        if check:
            assert proc.returncode == 0, (args, proc.stderr)
        return proc

    def log_tail(self) -> str:
        return (self.root / "dockerd.log").read_text()[-3000:]

    def load(self, image) -> str:
        """docker load, as the guest's trove-preload-images does; the ID the
        engine reports for the tag."""
        self.docker("load", "--input", str(image.archive))
        return self.docker("image", "inspect", "--format", "{{.Id}}",
                           image.ref).stdout.strip()

    def stop(self):
        if self.client is not None:
            for container in self.client.containers.list(all=True):
                container.remove(force=True)
            self.client.close()
        if self.proc is not None:
            stop(self.proc, timeout=60)


@pytest.fixture(scope="module")
def engine():
    if shutil.which("dockerd") is None:
        pytest.fail("dockerd is missing: install docker.io (bindep.txt, profile test)")
    # a short path: unix socket paths under it must stay below 108 bytes
    root = Path(tempfile.mkdtemp(prefix="tib-dockerd-", dir="/tmp"))
    bridge = f"tib{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "link", "add", bridge, "type", "bridge"], check=True)
    engine = Engine(root, bridge)
    try:
        subprocess.run(["ip", "addr", "add", "172.31.254.1/24", "dev", bridge], check=True)
        subprocess.run(["ip", "link", "set", bridge, "up"], check=True)
        engine.start()
        yield engine
    finally:
        engine.stop()
        subprocess.run(["ip", "link", "del", bridge], check=False)
        release_workdir(root)
        shutil.rmtree(root, ignore_errors=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def folders(base: Path, *names) -> dict:
    """Host folders owned by the service uid, as the agent's
    ensure_directory(..., user=database_service_uid) makes them."""
    made = {}
    for name in names:
        path = base / name
        path.mkdir(parents=True, exist_ok=True)
        os.chown(path, UID, GID)
        made[name] = path
    return made


def rendered(datastore: str, version: str) -> str:
    """The configuration the controller renders for the guest, by Trove's
    own template classes (trove/templates/<datastore>/config.template)."""
    dv = SimpleNamespace(datastore_name=datastore, manager=datastore, name=version,
                         version=version)
    return template.SingleInstanceConfigTemplate(dv, {"ram": 2048}, "test-instance").render()


def wait_healthy(engine, name="database"):
    deadline = time.monotonic() + HEALTHY_WITHIN
    while True:
        health = docker_util.get_container_health(engine.client, name)
        if health == "healthy":
            return time.monotonic()
        status = docker_util.get_container_status(engine.client, name)
        assert status in ("created", "running", "restarting"), \
            (status, engine.docker("logs", name).stderr[-4000:])
        assert time.monotonic() < deadline, \
            (health, engine.docker("logs", name).stderr[-4000:])
        time.sleep(1)


@contextlib.contextmanager
def mysql(password, **where):
    conn = pymysql.connect(user="root", password=password, connect_timeout=10,
                           autocommit=True, **where)
    try:
        yield conn.cursor()
    finally:
        conn.close()


def test_docker_loads_the_mariadb_archive_with_its_recorded_id(engine, mariadb_image):
    assert engine.load(mariadb_image) == mariadb_image.image_id
    assert mariadb_image.image_id == images.docker_archive_id(mariadb_image.archive)
    assert mariadb_image.packages["mariadb-server"].split(":")[-1].startswith("11.8.")
    config = engine.client.images.get(mariadb_image.ref).attrs["Config"]
    assert config["Entrypoint"] == ["/usr/local/bin/docker-entrypoint.sh"]
    assert config["Cmd"] == ["mariadbd"]
    assert "3306/tcp" in config["ExposedPorts"]


def test_mariadb_runs_as_the_agent_runs_it(engine, mariadb_image, tmp_path):
    """mysql_common/service.py start_db with mariadb's settings, then what
    the agent does next: root with the password over the socket, its secure
    steps, a restart with the data there."""
    engine.load(mariadb_image)
    host = folders(tmp_path, "etc-mysql", "etc-mysql/conf.d", "etc-mysql/mariadb.conf.d",
                   "mysqld", "var-lib-mysql", "var-lib-mysql/data")
    (host["etc-mysql"] / "my.cnf").write_text(rendered("mariadb", "11.8"))
    # the agent's set_data_dir(): an override in the include folder
    (host["etc-mysql/conf.d"] / "00-system.cnf").write_text(
        "[mysqld]\ndatadir = /var/lib/mysql/data\n")
    password = "Pw-" + uuid.uuid4().hex + "'\\\""
    data_dir = "/var/lib/mysql/data"
    ports = {f"{p}/tcp": ("127.0.0.1", free_port()) for p in (3306, 4444, 4567, 4568)}
    environment = {"MYSQL_ROOT_PASSWORD": password, "MYSQL_INITDB_SKIP_TZINFO": 1}
    environment.update(mariadb_service.MariaDBApp._extra_envs)
    started = time.monotonic()
    docker_util.start_container(
        engine.client, mariadb_image.ref,
        volumes={str(host["etc-mysql"]): {"bind": "/etc/mysql", "mode": "rw"},
                 str(host["mysqld"]): {"bind": "/var/run/mysqld", "mode": "rw"},
                 str(host["var-lib-mysql"]): {"bind": "/var/lib/mysql", "mode": "rw"}},
        network_mode=constants.DOCKER_BRIDGE_MODE, ports=ports, user=f"{UID}:{GID}",
        environment=environment, healthcheck=mariadb_service.MariaDBApp.HEALTHCHECK,
        command=mariadb_manager.Manager.get_start_db_params(None, data_dir),
        privileged=mariadb_service.MariaDBApp._previledged)
    print(f"mariadb:11.8 healthy {wait_healthy(engine) - started:.1f} s after start")
    container = engine.client.containers.get("database")
    assert container.attrs["Config"]["User"] == "1001:1001"
    logs = engine.docker("logs", "database").stderr
    assert "[entrypoint] data folder initialised" in logs
    assert "ready for connections" in logs

    # the agent: root with the password over the mounted socket
    sock = str(host["mysqld"] / "mysqld.sock")
    with mysql(password, unix_socket=sock) as cur:
        cur.execute("SELECT @@datadir, @@ignore_db_dirs, CURRENT_USER()")
        assert cur.fetchone() == ("/var/lib/mysql/data/", "lost+found,conf.d",
                                  "root@localhost")
        cur.execute("SELECT COUNT(*) FROM mysql.time_zone_name")
        assert cur.fetchone() == (0,)          # MYSQL_INITDB_SKIP_TZINFO
    with pytest.raises(pymysql.err.OperationalError):
        pymysql.connect(user="root", password="wrong", unix_socket=sock)
    # root@'%' over the published port, as with the official image
    tcp = {"host": "127.0.0.1", "port": ports["3306/tcp"][1]}
    with mysql(password, **tcp) as cur:
        cur.execute("CREATE DATABASE kept")
        cur.execute("CREATE TABLE kept.t (v INT)")
        cur.execute("INSERT INTO kept.t VALUES (42)")
    # the agent's secure_root(): only root@localhost stays
    with mysql(password, unix_socket=sock) as cur:
        cur.execute(sql_query.REMOVE_ANON)
        cur.execute(sql_query.REMOVE_ROOT)
        cur.execute("FLUSH PRIVILEGES")
        cur.execute("SELECT user, host FROM mysql.user WHERE user = 'root'")
        assert cur.fetchall() == (("root", "localhost"),)
    with pytest.raises(pymysql.err.OperationalError):
        pymysql.connect(user="root", password=password, **tcp)
    # a command through docker exec, as the agent's restore path runs one
    out = docker_util.run_command(engine.client, [
        "mariadb", "--defaults-file=/etc/mysql/my.cnf", "-uroot", f"-p{password}",
        "-e", "SELECT v FROM kept.t"])
    assert b"42" in out

    # restart (trove's restart()): back to healthy, data kept, no new init
    docker_util.restart_container(engine.client)
    wait_healthy(engine)
    with mysql(password, unix_socket=sock) as cur:
        cur.execute("SELECT v FROM kept.t")
        assert cur.fetchone() == (42,)
    assert engine.docker("logs", "database").stderr.count("data folder initialised") == 1
    docker_util.remove_container(engine.client)


def test_mariadb_after_a_restore(engine, mariadb_image, tmp_path):
    """The agent's restore (mariadb/manager.py reset_password_for_restore):
    the restored data has no .my-healthcheck.cnf and an unknown root
    password; the agent starts the server with --skip-grant-tables and its
    my.cnf also on /etc/my.cnf, waits for healthy (MARIADB_AUTO_UPGRADE
    brings the health check's file back, mariadb/service.py), resets root's
    password with 'mariadb -u root' through docker exec, and starts anew."""
    engine.load(mariadb_image)
    host = folders(tmp_path, "etc-mysql", "etc-mysql/conf.d", "mysqld", "var-lib-mysql",
                   "var-lib-mysql/data")
    (host["etc-mysql"] / "my.cnf").write_text(rendered("mariadb", "11.8"))
    data_dir = "/var/lib/mysql/data"
    volumes = {str(host["etc-mysql"]): {"bind": "/etc/mysql", "mode": "rw"},
               str(host["mysqld"]): {"bind": "/var/run/mysqld", "mode": "rw"},
               str(host["var-lib-mysql"]): {"bind": "/var/lib/mysql", "mode": "rw"}}
    environment = {"MYSQL_ROOT_PASSWORD": "first", "MYSQL_INITDB_SKIP_TZINFO": 1,
                   **mariadb_service.MariaDBApp._extra_envs}
    start = dict(network_mode="bridge", user=f"{UID}:{GID}", environment=environment,
                 healthcheck=mariadb_service.MariaDBApp.HEALTHCHECK, privileged=True)
    docker_util.start_container(
        engine.client, mariadb_image.ref, volumes=volumes,
        command=mariadb_manager.Manager.get_start_db_params(None, data_dir), **start)
    wait_healthy(engine)
    docker_util.remove_container(engine.client)
    cnf = host["var-lib-mysql/data"] / ".my-healthcheck.cnf"
    cnf.unlink()

    environment["MYSQL_ROOT_PASSWORD"] = "second"    # what the agent has saved
    my_cnf = {str(host["etc-mysql"] / "my.cnf"): {"bind": "/etc/my.cnf", "mode": "rw"}}
    docker_util.start_container(
        engine.client, mariadb_image.ref, volumes={**volumes, **my_cnf},
        command=f"--defaults-file=/etc/mysql/my.cnf --skip-grant-tables --datadir={data_dir} ",
        **start)
    wait_healthy(engine)
    assert cnf.is_file() and cnf.stat().st_uid == UID
    assert "creating the health check's users again" in engine.docker("logs", "database").stderr
    docker_util.run_command(engine.client, [
        "mariadb", "--defaults-file=/etc/mysql/my.cnf", "-u", "root", "-e",
        "FLUSH PRIVILEGES; ALTER USER 'root'@'localhost' IDENTIFIED BY 'second';"])
    docker_util.remove_container(engine.client)

    docker_util.start_container(
        engine.client, mariadb_image.ref, volumes=volumes,
        command=mariadb_manager.Manager.get_start_db_params(None, data_dir), **start)
    wait_healthy(engine)
    with mysql("second", unix_socket=str(host["mysqld"] / "mysqld.sock")) as cur:
        cur.execute("SELECT CURRENT_USER()")
        assert cur.fetchone() == ("root@localhost",)
    docker_util.remove_container(engine.client)


def test_docker_loads_the_mysql_archive_with_its_recorded_id(engine, mysql_image):
    assert engine.load(mysql_image) == mysql_image.image_id
    assert mysql_image.packages["mysql-server-8.0"].split(":")[-1].startswith("8.0.")
    config = engine.client.images.get(mysql_image.ref).attrs["Config"]
    assert config["Entrypoint"] == ["/usr/local/bin/docker-entrypoint.sh"]
    assert config["Cmd"] == ["mysqld"]
    assert config["User"] == "1001:1001"


def mysql_start(engine, image, host, password, command):
    """mysql_common/service.py start_db with the mysql manager's settings
    (mysql/service.py MySqlApp): its volumes, user, environment, health
    check and command; the published port on 127.0.0.1."""
    environment = {"MYSQL_ROOT_PASSWORD": password, "MYSQL_INITDB_SKIP_TZINFO": 1,
                   **mysql_service.MySqlApp._extra_envs}
    port = free_port()
    docker_util.start_container(
        engine.client, image.ref,
        volumes={str(host["etc-mysql"]): {"bind": "/etc/mysql", "mode": "rw"},
                 str(host["mysqld"]): {"bind": "/var/run/mysqld", "mode": "rw"},
                 str(host["var-lib-mysql"]): {"bind": "/var/lib/mysql", "mode": "rw"}},
        network_mode=constants.DOCKER_BRIDGE_MODE, ports={"3306/tcp": ("127.0.0.1", port)},
        user=f"{UID}:{GID}", environment=environment,
        healthcheck=mysql_service.MySqlApp.HEALTHCHECK, command=command,
        privileged=mysql_service.MySqlApp._previledged)
    return {"host": "127.0.0.1", "port": port}


def test_mysql_runs_as_the_agent_runs_it(engine, mysql_image, tmp_path):
    """The agent's do_prepare (mysql_common/manager.py) on an empty volume,
    then what it does next: root with the password over the socket, its
    secure steps, a restart with the data there, and the restore's
    password reset (reset_password_for_restore: 'mysqld --init-file')."""
    engine.load(mysql_image)
    host = folders(tmp_path, "etc-mysql", "etc-mysql/conf.d", "etc-mysql/mysql.conf.d",
                   "mysqld", "var-lib-mysql", "var-lib-mysql/data")
    (host["etc-mysql"] / "my.cnf").write_text(rendered("mysql", "8.0"))
    # the agent's set_data_dir(): an override in the include folder
    (host["etc-mysql/conf.d"] / "00-system.cnf").write_text(
        "[mysqld]\ndatadir = /var/lib/mysql/data\n")
    password = "Pw-" + uuid.uuid4().hex + "'\\\""
    data_dir = "/var/lib/mysql/data"
    command = mysql_manager.Manager.get_start_db_params(None, data_dir)
    started = time.monotonic()
    tcp = mysql_start(engine, mysql_image, host, password, command)
    print(f"mysql:8.0 healthy {wait_healthy(engine) - started:.1f} s after start")
    logs = engine.docker("logs", "database").stderr
    assert "[entrypoint] data folder initialised" in logs
    assert "ready for connections" in logs

    # the agent's health check, as the engine runs it (exec form: the
    # password is the literal "$MYSQL_ROOT_PASSWORD"): the server on
    # 127.0.0.1 answers "access denied", and mysqladmin ping exits 0 on any
    # answer; with the password expanded, it is alive
    check = engine.docker("exec", "database", *mysql_service.MySqlApp.HEALTHCHECK["test"][1:],
                          check=False)
    assert check.returncode == 0, check.stderr
    assert "Access denied for user 'root'" in check.stdout + check.stderr
    ping = engine.docker("exec", "database", "sh", "-c", 'mysqladmin ping -h 127.0.0.1 '
                         '-u root --password="$MYSQL_ROOT_PASSWORD"')
    assert ping.stdout.strip() == "mysqld is alive"
    # the agent: root with the password over the mounted socket
    sock = str(host["mysqld"] / "mysqld.sock")
    with mysql(password, unix_socket=sock) as cur:
        cur.execute("SELECT @@datadir, CURRENT_USER(), @@version")
        datadir, user, version = cur.fetchone()
        assert (datadir, user) == ("/var/lib/mysql/data/", "root@localhost")
        assert version.startswith("8.0.")
        cur.execute("SELECT plugin FROM mysql.user WHERE user = 'root' AND host = 'localhost'")
        assert cur.fetchone() == ("mysql_native_password",)   # Trove's template for 8.0
        cur.execute("SELECT COUNT(*) FROM mysql.time_zone_name")
        assert cur.fetchone() == (0,)          # MYSQL_INITDB_SKIP_TZINFO
    with pytest.raises(pymysql.err.OperationalError):
        pymysql.connect(user="root", password="wrong", unix_socket=sock)
    # root@'%' over the published port, as with the official image
    with mysql(password, **tcp) as cur:
        cur.execute("CREATE DATABASE kept")
        cur.execute("CREATE TABLE kept.t (v INT)")
        cur.execute("INSERT INTO kept.t VALUES (42)")
        cur.execute("SELECT v FROM kept.t")
        assert cur.fetchone() == (42,)
    # the agent's secure_root(): only root@localhost stays
    with mysql(password, unix_socket=sock) as cur:
        cur.execute(sql_query.REMOVE_ANON)
        cur.execute(sql_query.REMOVE_ROOT)
        cur.execute("FLUSH PRIVILEGES")
        cur.execute("SELECT user, host FROM mysql.user WHERE user = 'root'")
        assert cur.fetchall() == (("root", "localhost"),)
    with pytest.raises(pymysql.err.OperationalError):
        pymysql.connect(user="root", password=password, **tcp)

    # restart (trove's restart()): back to healthy, data kept, no new init
    docker_util.restart_container(engine.client)
    wait_healthy(engine)
    with mysql(password, unix_socket=sock) as cur:
        cur.execute("SELECT v FROM kept.t")
        assert cur.fetchone() == (42,)
    assert engine.docker("logs", "database").stderr.count("data folder initialised") == 1
    docker_util.remove_container(engine.client)

    # the restore's password reset: 'mysqld --init-file=... --datadir=...'
    # on existing data, started and waited for like any start
    init_file = host["var-lib-mysql/data"] / "init.sql"
    init_file.write_text("ALTER USER 'root'@'localhost' IDENTIFIED BY 'second';")
    os.chown(init_file, UID, GID)
    mysql_start(engine, mysql_image, host, "second",
                f"mysqld --init-file={data_dir}/init.sql --datadir={data_dir} ")
    wait_healthy(engine)
    with mysql("second", unix_socket=sock) as cur:
        cur.execute("SELECT v FROM kept.t")
        assert cur.fetchone() == (42,)
    docker_util.remove_container(engine.client)


def test_mysql_runs_on_its_own_defaults(engine, mysql_image):
    """Without the agent's mounts or configuration (the image's own
    mysqld.cnf, its /run/mysqld): initialised, and answering over TCP."""
    engine.load(mysql_image)
    port = free_port()
    engine.docker("run", "-d", "--name", "plain", "-e", "MYSQL_ROOT_PASSWORD=pw",
                  "-p", f"127.0.0.1:{port}:3306", mysql_image.ref)
    deadline = time.monotonic() + HEALTHY_WITHIN
    # the server's, not the temporary one's (which comes before)
    while "ready for connections" not in \
            engine.docker("logs", "plain").stderr.partition("[entrypoint] starting the server")[2]:
        assert engine.docker("inspect", "-f", "{{.State.Running}}", "plain").stdout.strip() \
            == "true", engine.docker("logs", "plain").stderr[-4000:]
        assert time.monotonic() < deadline
        time.sleep(1)
    with mysql("pw", host="127.0.0.1", port=port) as cur:
        cur.execute("SELECT @@datadir, @@socket, @@bind_address")
        assert cur.fetchone() == ("/var/lib/mysql/data/", "/var/run/mysqld/mysqld.sock", "*")
    engine.docker("rm", "-f", "plain")


def test_docker_loads_the_postgres_archive_with_its_recorded_id(engine, postgres_image):
    assert engine.load(postgres_image) == postgres_image.image_id
    assert postgres_image.packages["postgresql-17"].startswith("17.")
    config = engine.client.images.get(postgres_image.ref).attrs["Config"]
    assert config["Cmd"] == ["postgres"]
    assert config["Env"][0].startswith("PATH=/usr/lib/postgresql/17/bin:")


def pg_host_folders(tmp_path):
    host = folders(tmp_path, "etc-postgresql", "etc-postgresql/conf.d", "socket",
                   "var-lib-postgresql", "var-lib-postgresql/data",
                   "var-lib-postgresql/data/pgdata", "var-lib-postgresql/data/wal_archive")
    (host["etc-postgresql"] / "postgresql.conf").write_text(rendered("postgresql", "17"))
    # the agent's set_data_dir() and hba_file overrides (postgres/manager.py)
    (host["etc-postgresql/conf.d"] / "00-system.conf").write_text(
        f"data_directory = '/var/lib/postgresql/data/pgdata'\n"
        f"hba_file = '{pg_service.HBA_CONFIG_FILE}'\n")
    # the rules of PgSqlApp.apply_access_rules (no TLS)
    (host["etc-postgresql"] / "pg_hba.conf").write_text(
        "local all postgres trust\nlocal replication postgres trust\nlocal all all md5\n"
        "host all postgres 127.0.0.1/32 trust\nhost all postgres ::1/128 trust\n"
        "host all postgres localhost trust\nhost all postgres 0.0.0.0/0 reject\n"
        "host all postgres ::/0 reject\nhost all all 0.0.0.0/0 md5\nhost all all ::/0 md5\n")
    os.chown(host["etc-postgresql"] / "pg_hba.conf", UID, GID)
    return host


def pg_start(engine, image, host, user=f"{UID}:{GID}", password="pw"):
    """postgres/service.py start_db, with the command of manager.py do_prepare."""
    docker_util.start_container(
        engine.client, image.ref,
        volumes={str(host["etc-postgresql"]): {"bind": "/etc/postgresql", "mode": "rw"},
                 str(host["socket"]): {"bind": "/var/run/postgresql", "mode": "rw"},
                 str(host["var-lib-postgresql"]): {"bind": "/var/lib/postgresql",
                                                   "mode": "rw"},
                 str(host["var-lib-postgresql/data"]): {"bind": "/var/lib/postgresql/data",
                                                        "mode": "rw"}},
        network_mode="bridge", ports={"5432/tcp": ("127.0.0.1", free_port())}, user=user,
        environment={"POSTGRES_PASSWORD": password,
                     "PGDATA": "/var/lib/postgresql/data/pgdata"},
        healthcheck=pg_service.PgSqlApp.HEALTHCHECK,
        command=f"postgres -c config_file={pg_service.CONFIG_FILE}")


def test_postgres_runs_as_the_agent_runs_it(engine, postgres_image, tmp_path):
    engine.load(postgres_image)
    host = pg_host_folders(tmp_path)
    started = time.monotonic()
    pg_start(engine, postgres_image, host, password="Pw-" + uuid.uuid4().hex)
    print(f"postgres:17 healthy {wait_healthy(engine) - started:.1f} s after start")
    container = engine.client.containers.get("database")
    logs = engine.docker("logs", "database").stderr
    assert "[entrypoint] PGDATA initialised" in logs
    assert "database system is ready to accept connections" in logs

    # the agent's PostgresConnection: postgres over the socket folder
    conn = psycopg2.connect(user="postgres", host=str(host["socket"]), dbname="postgres")
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("SELECT current_setting('lc_messages'), current_setting('TimeZone'), "
                    "current_setting('data_directory'), current_setting('hba_file')")
        assert cur.fetchone() == ("en_US.utf8", "Etc/UTC", "/var/lib/postgresql/data/pgdata",
                                  pg_service.HBA_CONFIG_FILE)
        cur.execute("SELECT datcollate FROM pg_database WHERE datname = 'postgres'")
        assert cur.fetchone() == ("en_US.utf8",)
        cur.execute("CREATE USER app PASSWORD 'app-pw'")
        cur.execute("CREATE DATABASE kept OWNER app")
    conn.close()
    # a user over the published port (Trove's hba: md5 for everyone but postgres)
    tcp = {"host": "127.0.0.1",
           "port": int(container.attrs["HostConfig"]["PortBindings"]["5432/tcp"][0]["HostPort"])}
    conn = psycopg2.connect(user="app", password="app-pw", dbname="kept", **tcp)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("CREATE TABLE t (v int)")
        cur.execute("INSERT INTO t VALUES (42)")
    conn.close()
    # what the agent runs through docker exec (service.py reload, apply_overrides)
    assert b"server signaled" in docker_util.run_command(engine.client, "pg_ctl reload")
    out = docker_util.run_command(engine.client, ["psql", "-U", "postgres", "-tAc", "SELECT 1"])
    assert out.strip() == b"1"

    docker_util.restart_container(engine.client)
    wait_healthy(engine)
    conn = psycopg2.connect(user="app", password="app-pw", dbname="kept", **tcp)
    with conn.cursor() as cur:
        cur.execute("SELECT v FROM t")
        assert cur.fetchone() == (42,)
    conn.close()
    assert engine.docker("logs", "database").stderr.count("PGDATA initialised") == 1
    docker_util.remove_container(engine.client)


def test_postgres_initialises_for_a_uid_without_a_name(engine, postgres_image, tmp_path):
    """database_service_uid is configurable: initdb gets a name for another
    uid from nss_wrapper."""
    engine.load(postgres_image)
    host = pg_host_folders(tmp_path)
    for path in tmp_path.rglob("*"):
        os.chown(path, 2345, 2345)
    pg_start(engine, postgres_image, host, user="2345:2345")
    wait_healthy(engine)
    conn = psycopg2.connect(user="postgres", host=str(host["socket"]), dbname="postgres")
    with conn.cursor() as cur:
        cur.execute("SELECT 1")
        assert cur.fetchone() == (1,)
    conn.close()
    assert (host["var-lib-postgresql/data/pgdata"] / "PG_VERSION").stat().st_uid == 2345
    docker_util.remove_container(engine.client)


def test_a_second_build_is_the_cached_one(mariadb_image):
    started = time.monotonic()
    again = datastore_image.build(mariadb_image.ref)
    took = time.monotonic() - started
    assert again == mariadb_image
    meta = json.loads(mariadb_image.archive.with_suffix(".json").read_text())
    print(f"mariadb:11.8 from the cache in {took:.2f} s; built in {meta['build_seconds']} s; "
          f"{mariadb_image.size_bytes} bytes")
    assert took < 10
