"""Datastore container images built here from distribution packages, with
no registry, as docker-archives: ``mariadb:11.8`` and ``postgres:17`` from
Debian trixie, ``mysql:8.0`` from Ubuntu noble (distributions.py).

The contract: what Trove 26's guest agent does with the image, and what
the image therefore does (file names under trove/ in the Trove release).

What the agent does, for every datastore (guestagent/utils/docker.py,
``start_container``):

- runs ``<[manager] docker_image>:<datastore version>`` (common/cfg.py:
  ``mariadb``, ``postgres``) named ``database``, as ``user="<uid>:<gid>"``
  from ``database_service_uid``/``gid`` (default 1001, cfg.py and
  guestagent/datastore/service.py), restart policy ``unless-stopped``,
  ``ipc_mode=host``, bridge networking with the datastore's ``tcp_ports``
  published (or its own network through the low-level API with network
  isolation, which always pulls first), and the health check it passes in;
- waits for the engine's health status ``healthy`` (``wait_for_status``),
  and on a restart just restarts the container (data already there);
- runs commands in it with ``docker exec`` as the same user.

MariaDB (guestagent/datastore/mysql_common/service.py ``start_db``,
mariadb/service.py, mariadb/manager.py):

- env ``MYSQL_ROOT_PASSWORD``, ``MYSQL_INITDB_SKIP_TZINFO=1`` and
  ``MARIADB_AUTO_UPGRADE=1``; ``privileged=True``;
- mounts host ``/etc/mysql`` (its my.cnf from templates/mariadb/
  config.template: socket /var/run/mysqld/mysqld.sock, datadir
  /var/lib/mysql/data, tmpdir /var/tmp, no log file: the log goes to
  stderr), host ``/var/lib/mysqld`` on ``/var/run/mysqld`` (the socket) and
  ``/var/lib/mysql`` (the volume);
- command ``--defaults-file=/etc/mysql/my.cnf --ignore-db-dir=lost+found
  --ignore-db-dir=conf.d --datadir=/var/lib/mysql/data``: options only, so
  the entrypoint puts ``mariadbd`` in front. MariaDB 11.8 takes
  ``--ignore-db-dir`` as the prefix of ``--ignore-db-dirs`` (it accumulates:
  checked), so the command is passed on unchanged;
- health check ``healthcheck.sh --defaults-file
  /var/lib/mysql/data/.my-healthcheck.cnf --connect --innodb_initialized``;
- then connects as root with the password over /var/lib/mysqld/mysqld.sock,
  creates os_admin@localhost, deletes anonymous users, and (``secure_root``)
  every root but root@localhost; after a restore it starts the server with
  ``--skip-grant-tables`` and resets root's password with ``mariadb -u root``
  through ``docker exec``, relying on MARIADB_AUTO_UPGRADE to bring back a
  missing .my-healthcheck.cnf.

So the mariadb image (mariadb/docker-entrypoint.sh, mariadb/healthcheck.sh):
on an empty data folder (the server's ``datadir``, default
/var/lib/mysql/data) it runs mariadb-install-db with password login for
root, starts a socket-only temporary server, sets root@localhost's password
and makes root@'%' as the official image does (the agent removes it),
skips the time zone tables when asked, creates the ``healthcheck`` user and
``<datadir>/.my-healthcheck.cnf``, stops the temporary server and execs
the server; with MARIADB_AUTO_UPGRADE on existing data it runs
mariadb-upgrade when the data is from an older server and remakes a missing
.my-healthcheck.cnf. ``healthcheck.sh`` (Debian ships none) exits 0 only when
the server answers with networking on and InnoDB is initialised.

MySQL (guestagent/datastore/mysql_common/service.py ``start_db``,
mysql_common/manager.py, mysql/service.py, mysql/manager.py):

- the same mounts as MariaDB (host ``/etc/mysql`` with its my.cnf from
  templates/mysql/config.template: socket /var/run/mysqld/mysqld.sock,
  datadir /var/lib/mysql/data, ``secure-file-priv = NULL``,
  ``default_authentication_plugin = mysql_native_password`` below 8.4, no
  log file), env ``MYSQL_ROOT_PASSWORD`` and ``MYSQL_INITDB_SKIP_TZINFO=1``,
  not privileged;
- command ``--datadir=/var/lib/mysql/data`` (``get_start_db_params``): no
  --defaults-file, so mysqld reads the mounted /etc/mysql/my.cnf by
  default; on a restore ``mysqld --init-file=<datadir>/init.sql
  --datadir=...`` (``reset_password_for_restore``) and ``mysqld
  --skip-slave-start=ON --datadir=...`` (``reset_data_for_restore_snapshot``);
- health check ``mysqladmin ping -h 127.0.0.1 -u root
  --password=$MYSQL_ROOT_PASSWORD`` in exec form (the engine expands no
  variable; mysqladmin ping exits 0 on any answer, "access denied"
  included): healthy as soon as the server listens on TCP;
- then root with the password over /var/lib/mysqld/mysqld.sock, as for
  MariaDB (os_admin, secure_root).

So the mysql image (mysql/docker-entrypoint.sh): on an empty data folder it
runs ``mysqld --initialize-insecure`` with the agent's options, starts a
socket-only temporary server (no TCP: not healthy yet), sets
root@localhost's password, makes root@'%' as the official image does,
loads the time zone tables unless told not to, stops the temporary server
and execs the server; data already there is used as it is (MySQL upgrades
its own data at start). mysql-client-8.0 gives mysql and mysqladmin.

PostgreSQL (guestagent/datastore/postgres/service.py ``start_db``,
postgres/manager.py):

- env ``POSTGRES_PASSWORD`` and ``PGDATA=/var/lib/postgresql/data/pgdata``;
- mounts host ``/etc/postgresql`` (postgresql.conf from
  templates/postgresql/config.template, with ``lc_*='en_US.utf8'`` and
  ``timezone='Etc/UTC'``; conf.d with data_directory and hba_file; its own
  pg_hba.conf: local trust for postgres), host /var/lib/postgresql-socket on
  /var/run/postgresql, /var/lib/postgresql and /var/lib/postgresql/data;
- command ``postgres -c config_file=/etc/postgresql/postgresql.conf``;
  health check ``pg_isready -U postgres``; ``pg_ctl reload`` through
  ``docker exec``; connects as postgres over the socket folder.

So the postgres image (postgresql/docker-entrypoint.sh): on an empty PGDATA
runs initdb, superuser ``postgres`` with POSTGRES_PASSWORD (through
--pwfile), local trust and scram-sha-256 for host as the official image
does, then execs the server; /usr/lib/postgresql/17/bin comes first on PATH
(pg_ctl is only there); the en_US.UTF-8 locale and tzdata are in the image.
initdb needs a name for its uid: the image has ``database`` (1001:1001,
Trove's default) in /etc/passwd and /etc/group, which also names the user
of ``docker exec``; for any other uid the entrypoint gives initdb one
through nss_wrapper (libnss-wrapper), as the official image does.

For both: the entrypoint never switches user or changes ownership, writes
only to the mounts and temporary folders, logs to stderr, and execs any
command that is not the server's as given. The image's default user is
1001:1001; its mount points are writable by any uid when nothing is mounted.

Build: mmdebstrap (minbase, no recommends, no documentation) writes the
root file system as a tar, from the recipe's distribution, verified with
the host's Debian keyring or with the Ubuntu archive keyring checked
against pinned fingerprints (build/ubuntu_keyring.py); archive.py wraps it
as the one layer of a docker-archive. Cached under ``<cache>/datastore-images``, one folder per
image named by the hash of every input (recipes.py), with a JSON sidecar
holding the image ID and the version of every package inside. The cache is
keyed by the inputs, not by the mirror's state: ``rebuild`` takes newer
packages.
"""
from dataclasses import dataclass
import json
import os
from pathlib import Path
import shutil
import tempfile
import time

from ... import __version__
from ...errors import BuildError, HostError, InputError
from ...plumbing import host, log
from ...plumbing.cleanup import release_workdir
from ...plumbing.runner import run, sha256_of
from ..cache import cache_dir
from .. import ubuntu_keyring
from . import archive, distributions, recipes
from .distributions import DEFAULT, DEFAULT_MIRROR, DEFAULT_SECURITY_MIRROR  # noqa: F401
from .recipes import Recipe

SIDECAR_SCHEMA = 1


@dataclass(frozen=True)
class DatastoreImage:
    ref: str              # "mariadb:11.8"
    archive: Path         # docker-archive tar in the cache, tagged with ref
    image_id: str         # "sha256:...", as 'docker image inspect' reports it
    size_bytes: int
    packages: dict        # {"mariadb-server": "1:11.8.3-1", ...}: every package inside
    inputs_hash: str
    archive_sha256: str = ""  # of the archive, as written (from the sidecar)


def known() -> list[str]:
    """The refs that can be built."""
    return sorted(recipes.RECIPES)


def recipe(ref: str) -> Recipe:
    """The recipe of ref; InputError naming the known refs otherwise."""
    found = recipes.RECIPES.get(ref)
    if found is not None:
        return found
    names = ", ".join(known())
    same_name = [r for r in recipes.RECIPES.values() if r.name == ref.split(":")[0]]
    if same_name:
        other = same_name[0]
        raise InputError(f"{ref}: {other.distribution.title} has {other.server_package} "
                         f"{other.server_version}, so only {other.ref} can be "
                         f"built here (known: {names})")
    raise InputError(f"{ref}: not a datastore image that can be built here (known: {names})")


def default_cache() -> Path:
    return cache_dir() / "datastore-images"


def _entry(cache: Path | None, rec: Recipe, digest: str) -> Path:
    return (cache if cache is not None else default_cache()) / \
        f"{rec.name}-{rec.version}-{digest[:16]}"


def _stem(rec: Recipe) -> str:
    return f"{rec.name}-{rec.version}"


def _load(entry: Path, rec: Recipe, digest: str) -> DatastoreImage | None:
    """The image cached in entry, if it is whole and made from these inputs."""
    try:
        meta = json.loads((entry / f"{_stem(rec)}.json").read_text())
        path = entry / meta["archive"]
        whole = (meta["inputs_hash"] == digest and meta["ref"] == rec.ref
                 and path.stat().st_size == meta["size_bytes"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not whole:
        return None
    return DatastoreImage(rec.ref, path, meta["image_id"], meta["size_bytes"],
                          dict(meta["packages"]), digest, meta["archive_sha256"])


def mirrors_for(ref: str, distro: str, mirror: str | None,
                security_mirror: str | None) -> dict:
    """The mirror arguments of build() and cached() for ref from an OS's
    mirrors (a profile's os.distro, os.mirror, os.security_mirror): only
    when ref's packages come from that distribution, else none (its own
    defaults)."""
    if recipe(ref).distribution.name != distro:
        return {}
    given = {"mirror": mirror, "security_mirror": security_mirror}
    return {k: v for k, v in given.items() if v}


def cached(ref: str, cache: Path | None = None, *, mirror=DEFAULT,
           security_mirror=DEFAULT) -> DatastoreImage | None:
    """What build() would return without building anything, or None."""
    rec = recipe(ref)
    mirror, security_mirror = rec.distribution.mirrors(mirror, security_mirror)
    digest = recipes.inputs_hash(rec, mirror, security_mirror)
    return _load(_entry(cache, rec, digest), rec, digest)


def host_problems(rec: Recipe) -> list[str]:
    """What this host lacks for building rec, as fixes to make."""
    problems = []
    if os.geteuid() != 0:
        problems.append("mmdebstrap --mode=root needs root: run as root")
    if host.which("mmdebstrap") is None:
        problems.append("mmdebstrap is missing: install 'mmdebstrap'")
    dist = rec.distribution
    if dist is distributions.TRIXIE and not (
            dist.keyring.is_file() and distributions.TRIXIE_KEY.is_file()):
        problems.append(f"{dist.keyring} cannot verify {dist.title}: install "
                        "debian-archive-keyring 2023.3+deb12u2 or later")
    if dist.keyring is None and host.which("gpg") is None:
        problems.append(f"gpg is missing (it checks the {dist.title} archive keyring): "
                        "install 'gpg'")
    return problems


def _keyring(rec: Recipe, mirror: str) -> Path:
    """What verifies rec's archive: the host's Debian keyring, or the
    Ubuntu archive keyring from mirror's pool, checked against the pinned
    fingerprints (build/ubuntu_keyring.py)."""
    dist = rec.distribution
    if dist.keyring is not None:
        return dist.keyring
    with log.step(f"{dist.title} archive keyring (pinned fingerprints)"):
        return ubuntu_keyring.verified_keyring(mirror, dist.suite)


def parse_packages(text: str) -> dict[str, str]:
    """'status<TAB>name<TAB>version' lines (dpkg-query) -> the installed ones."""
    found = {}
    for line in text.splitlines():
        parts = line.split("\t")
        if len(parts) == 3 and parts[0].strip() == "ii":
            found[parts[1]] = parts[2]
    return found


def _server_version(rec: Recipe, packages: dict) -> str:
    version = packages.get(rec.server_package)
    if version is None:
        raise BuildError(f"{rec.ref}: {rec.server_package} is not in the built root file system")
    upstream = version.split(":", 1)[-1]
    if upstream != rec.server_version and not any(
            upstream.startswith(rec.server_version + sep) for sep in ".-+~"):
        raise BuildError(f"{rec.ref}: the mirror's {rec.server_package} is {version}, not "
                         f"{rec.server_version}: the tag would lie about it")
    return version


def _make(rec: Recipe, digest: str, work: Path, mirror: str,
          security_mirror: str | None) -> Path:
    """Build into work/entry; return that folder."""
    started = time.monotonic()
    tmp, entry = work / "tmp", work / "entry"
    tmp.mkdir()
    entry.mkdir()
    layer, listing = work / "rootfs.tar", work / "packages.tsv"
    dist = rec.distribution
    keyring = _keyring(rec, mirror)
    with log.step(f"root file system: mmdebstrap {dist.title} "
                  f"({', '.join(rec.packages)})"):
        # TMPDIR: mmdebstrap's own work folder (and its mounts) stay in ours
        run(recipes.mmdebstrap_argv(rec, mirror, security_mirror, layer, listing, keyring),
            env_changes={"TMPDIR": tmp})
    packages = parse_packages(listing.read_text())
    server = _server_version(rec, packages)
    with log.step("docker-archive"):
        out = entry / f"{_stem(rec)}.tar"
        image_id = archive.write(
            layer, rec.ref, rec.image_config(), out, architecture=recipes.ARCH,
            created_by=f"trove-image-builder {__version__}: mmdebstrap {dist.suite} "
                       + " ".join(rec.packages))
        layer.unlink()
    size = out.stat().st_size
    meta = {"schema": SIDECAR_SCHEMA, "ref": rec.ref, "image_id": image_id,
            "archive": out.name, "size_bytes": size, "archive_sha256": sha256_of(out),
            "server_package": rec.server_package, "server_version": server,
            "packages": packages, "inputs_hash": digest, "distribution": dist.name,
            "suite": dist.suite, "sources": recipes.sources(rec, mirror, security_mirror),
            "builder_version": __version__,
            "build_seconds": round(time.monotonic() - started, 1)}
    (entry / f"{_stem(rec)}.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    log.info(f"{rec.ref}: {image_id[:19]}, {size / 1e6:.0f} MB, {len(packages)} packages, "
             f"{rec.server_package} {server}")
    return entry


def build(ref: str, cache: Path | None = None, *, mirror=DEFAULT,
          security_mirror=DEFAULT, rebuild: bool = False) -> DatastoreImage:
    """The image ref from the cache, or built into it first (always with
    rebuild). Written beside the cache and moved into place whole; nothing
    is left behind on a failure or Ctrl-C. The mirrors are those of ref's
    distribution (DEFAULT: its own; a None security mirror: no security
    updates)."""
    rec = recipe(ref)
    mirror, security_mirror = rec.distribution.mirrors(mirror, security_mirror)
    digest = recipes.inputs_hash(rec, mirror, security_mirror)
    entry = _entry(cache, rec, digest)
    if not rebuild:
        found = _load(entry, rec, digest)
        if found is not None:
            log.info(f"{ref}: cached, {found.image_id[:19]} ({found.archive})")
            return found
    problems = host_problems(rec)
    if problems:
        raise HostError(f"cannot build {ref}: " + "; ".join(problems))
    entry.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".build-{entry.name}-", dir=entry.parent))
    try:
        with log.step(f"datastore image {ref}"):
            made = _make(rec, digest, work, mirror, security_mirror)
        if entry.exists():
            if not rebuild:
                # another build of the same inputs finished first: keep it
                found = _load(entry, rec, digest)
                if found is not None:
                    return found
            entry.rename(work / "old")
        made.rename(entry)
    finally:
        release_workdir(work)
        shutil.rmtree(work, ignore_errors=True)
    found = _load(entry, rec, digest)
    if found is None:
        raise BuildError(f"{ref}: the image written to {entry} does not read back")
    return found
