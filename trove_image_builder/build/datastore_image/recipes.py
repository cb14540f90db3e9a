"""What goes into each datastore image, in one table, and the mmdebstrap
command that makes its root file system. Everything that shapes an image is
in its Recipe (with its Distribution, distributions.py) or in the constants
here, and all of it goes into the inputs hash that keys the cache."""
from dataclasses import dataclass
import hashlib
import json
from pathlib import Path
import shlex

from .distributions import (  # noqa: F401 (the Debian defaults, as the CLI names them)
    ARCH, DEFAULT_MIRROR, DEFAULT_SECURITY_MIRROR, NOBLE, TRIXIE, Distribution)

# Bump when the build changes in a way the table below does not show.
RECIPE_VERSION = 2

DATA = Path(__file__).resolve().parent

APT_OPTIONS = ('APT::Install-Recommends "false"', 'Acquire::Languages "none"')
# No documentation, manual pages or translations in the image; the
# copyright files stay.
DPKG_OPTIONS = ("path-exclude=/usr/share/doc/*", "path-include=/usr/share/doc/*/copyright",
                "path-exclude=/usr/share/man/*", "path-exclude=/usr/share/info/*",
                "path-exclude=/usr/share/locale/*",
                "path-include=/usr/share/locale/locale.alias",
                "path-exclude=/usr/share/lintian/*")

# The uid:gid Trove's agent runs the container as by default
# (database_service_uid in trove/common/cfg.py): a name in the image, so that
# tools run with 'docker exec' (psql, pg_ctl, mariadb) know who they are.
SERVICE_UID = 1001
BASE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

# Run first on the root file system ("$1"), for every image: what packages
# left in /run goes (mmdebstrap's own cleanup/run is skipped, since it would
# also remove the socket folders the recipes make there).
CLEAN_RUN = ('find "$1/run" -mindepth 1 -maxdepth 1 ! -name lock '
             '-exec rm -rf --one-file-system {} +')

# Run on the finished root file system ("$1"), for every image.
COMMON_SETUP = (
    f'chroot "$1" groupadd --gid {SERVICE_UID} database',
    f'chroot "$1" useradd --uid {SERVICE_UID} --gid {SERVICE_UID} --no-create-home '
    '--home-dir /nonexistent --shell /usr/sbin/nologin database',
    'find "$1/var/log" -type f -delete',
    'rm -f "$1"/var/cache/debconf/*-old "$1"/var/lib/dpkg/*-old',
    'rm -rf "$1"/var/cache/apt/* "$1"/var/lib/apt/lists/* "$1"/tmp/* "$1"/var/tmp/*',
)


@dataclass(frozen=True)
class File:
    """A file of this package copied into the image."""
    source: str        # relative to this folder: "mariadb/healthcheck.sh"
    target: str        # in the image
    mode: int = 0o755

    @property
    def path(self) -> Path:
        return DATA / self.source


@dataclass(frozen=True)
class Recipe:
    ref: str                      # <[manager] docker_image>:<datastore version>
    distribution: Distribution    # where the packages come from
    server_package: str           # its version must start with server_version
    server_version: str
    packages: tuple[str, ...]
    files: tuple[File, ...]
    setup: tuple[str, ...]        # shell, on the root file system "$1", after the files
    entrypoint: tuple[str, ...]
    cmd: tuple[str, ...]
    env: tuple[tuple[str, str], ...]
    port: int
    stop_signal: str
    description: str

    @property
    def name(self) -> str:
        return self.ref.split(":")[0]

    @property
    def version(self) -> str:
        return self.ref.split(":")[1]

    def image_config(self) -> dict:
        """The 'config' of the image's configuration (the image spec's names)."""
        return {
            "User": f"{SERVICE_UID}:{SERVICE_UID}",
            "Env": [f"{k}={v}" for k, v in self.env],
            "Entrypoint": list(self.entrypoint),
            "Cmd": list(self.cmd),
            "ExposedPorts": {f"{self.port}/tcp": {}},
            "StopSignal": self.stop_signal,
            "WorkingDir": "/",
            "Labels": {"org.opencontainers.image.title": self.ref,
                       "org.opencontainers.image.description": self.description},
        }


ENTRYPOINT = "/usr/local/bin/docker-entrypoint.sh"

RECIPES = {r.ref: r for r in (
    Recipe(
        ref="mariadb:11.8",
        distribution=TRIXIE,
        server_package="mariadb-server",
        server_version="11.8",
        packages=("mariadb-server", "mariadb-client", "tzdata"),
        files=(File("mariadb/docker-entrypoint.sh", ENTRYPOINT),
               File("mariadb/healthcheck.sh", "/usr/local/bin/healthcheck.sh"),
               File("mariadb/90-container.cnf", "/etc/mysql/mariadb.conf.d/90-container.cnf",
                    0o644)),
        setup=(
            # the data folder mariadb-server's postinst made: not ours
            'rm -rf "$1"/var/lib/mysql/*',
            # mount points, writable for any uid when nothing is mounted
            'mkdir -p "$1/var/lib/mysql/data" "$1/run/mysqld"',
            'chmod 1777 "$1/var/lib/mysql" "$1/var/lib/mysql/data" "$1/run/mysqld"',
        ),
        entrypoint=(ENTRYPOINT,),
        cmd=("mariadbd",),
        env=(("PATH", BASE_PATH), ("LANG", "C.UTF-8")),
        port=3306,
        stop_signal="SIGTERM",
        description="MariaDB 11.8 from Debian trixie packages, for Trove's guest agent",
    ),
    Recipe(
        ref="postgres:17",
        distribution=TRIXIE,
        server_package="postgresql-17",
        server_version="17",
        packages=("postgresql-17", "locales", "tzdata", "libnss-wrapper"),
        files=(File("postgresql/docker-entrypoint.sh", ENTRYPOINT),),
        setup=(
            # en_US.utf8: Trove's postgresql config.template sets lc_* to it
            'echo "en_US.UTF-8 UTF-8" > "$1/etc/locale.gen"',
            'chroot "$1" locale-gen',
            # the cluster postgresql-common's postinst made: not ours
            'rm -rf "$1/var/lib/postgresql/17" "$1/etc/postgresql/17"',
            # a cluster made without Trove's configuration listens everywhere
            "sed -ri \"s/^#?listen_addresses\\s*=\\s*\\S+/listen_addresses = '*'/\" "
            '"$1/usr/share/postgresql/17/postgresql.conf.sample"',
            'mkdir -p "$1/var/lib/postgresql/data" "$1/run/postgresql"',
            'chmod 1777 "$1/var/lib/postgresql/data"',
            'chmod 3777 "$1/run/postgresql"',
        ),
        entrypoint=(ENTRYPOINT,),
        cmd=("postgres",),
        # the server's own folder first: pg_ctl is only there, and the
        # /usr/bin wrappers (pg_isready, psql) need a Debian cluster layout
        env=(("PATH", "/usr/lib/postgresql/17/bin:" + BASE_PATH), ("LANG", "en_US.utf8"),
             ("PGDATA", "/var/lib/postgresql/data")),
        port=5432,
        stop_signal="SIGINT",
        description="PostgreSQL 17 from Debian trixie packages, for Trove's guest agent",
    ),
    Recipe(
        ref="mysql:8.0",
        distribution=NOBLE,
        server_package="mysql-server-8.0",
        server_version="8.0",
        # mysql-server-8.0 brings mysql-client-8.0 (mysql, mysqladmin: the
        # agent's health check is 'mysqladmin ping -h 127.0.0.1',
        # trove/guestagent/datastore/mysql/service.py HEALTHCHECK)
        packages=("mysql-server-8.0", "mysql-client-8.0", "tzdata"),
        files=(File("mysql/docker-entrypoint.sh", ENTRYPOINT),
               # the image's own defaults, in place of Ubuntu's (which bind
               # to 127.0.0.1 and log to /var/log/mysql)
               File("mysql/mysqld.cnf", "/etc/mysql/mysql.conf.d/mysqld.cnf", 0o644)),
        setup=(
            # the data folder, keyring and files folders mysql-server-8.0's
            # postinst made: not ours
            'rm -rf "$1"/var/lib/mysql/* "$1/var/lib/mysql-keyring" "$1/var/lib/mysql-files"',
            # the password of a debian-sys-maint user that data folder had
            'rm -f "$1/etc/mysql/debian.cnf"',
            'mkdir -p "$1/var/lib/mysql/data" "$1/run/mysqld"',
            'chmod 1777 "$1/var/lib/mysql" "$1/var/lib/mysql/data" "$1/run/mysqld"',
        ),
        entrypoint=(ENTRYPOINT,),
        cmd=("mysqld",),
        env=(("PATH", BASE_PATH), ("LANG", "C.UTF-8")),
        port=3306,
        stop_signal="SIGTERM",
        description="MySQL 8.0 from Ubuntu noble packages, for Trove's guest agent",
    ),
)}


def sources(recipe: Recipe, mirror: str, security_mirror: str | None) -> list[str]:
    """The apt source lines of recipe's distribution (see
    Distribution.sources)."""
    return recipe.distribution.sources(mirror, security_mirror)


def inputs_hash(recipe: Recipe, mirror: str, security_mirror: str | None) -> str:
    """SHA-256 over everything that makes the image: the recipe, its
    distribution, the sources, the options, the content of every file
    copied in."""
    dist = recipe.distribution
    inputs = {
        "recipe_version": RECIPE_VERSION,
        "recipe": {k: v for k, v in recipe.__dict__.items()
                   if k not in ("files", "distribution")},
        "files": [{"target": f.target, "mode": f.mode,
                   "sha256": hashlib.sha256(f.path.read_bytes()).hexdigest()}
                  for f in recipe.files],
        "config": recipe.image_config(),
        "distribution": {"name": dist.name, "suite": dist.suite,
                         "keyring": dist.keyring_identity()},
        "arch": ARCH, "sources": sources(recipe, mirror, security_mirror),
        "apt": APT_OPTIONS, "dpkg": DPKG_OPTIONS, "clean_run": CLEAN_RUN,
        "common_setup": COMMON_SETUP,
        "uid": SERVICE_UID,
    }
    text = json.dumps(inputs, sort_keys=True, default=list)
    return hashlib.sha256(text.encode()).hexdigest()


def mmdebstrap_argv(recipe: Recipe, mirror: str, security_mirror: str | None,
                    layer: Path, packages_list: Path, keyring: Path | None = None) -> list[str]:
    """mmdebstrap writing the root file system as a tar (the image's one
    layer), and the installed packages as 'status<TAB>name<TAB>version'
    lines into packages_list. keyring: what verifies the archive (default:
    the distribution's keyring on the host; an Ubuntu recipe needs the
    verified Ubuntu archive keyring given)."""
    keyring = keyring or recipe.distribution.keyring
    if keyring is None:
        raise ValueError(f"{recipe.ref}: give the verified keyring of "
                         f"{recipe.distribution.title}")
    hooks = [CLEAN_RUN]
    hooks += [f'install -D -m {f.mode:04o} {shlex.quote(str(f.path))} "$1"{shlex.quote(f.target)}'
              for f in recipe.files]
    hooks += list(recipe.setup) + list(COMMON_SETUP)
    hooks.append("chroot \"$1\" dpkg-query --show "
                 "--showformat='${db:Status-Abbrev}\\t${Package}\\t${Version}\\n' > "
                 + shlex.quote(str(packages_list)))
    return ["mmdebstrap", "--variant=minbase", "--mode=root", "--format=tar",
            f"--architectures={ARCH}", f"--keyring={keyring}",
            "--include=" + ",".join(recipe.packages),
            *[f"--aptopt={o}" for o in APT_OPTIONS],
            *[f"--dpkgopt={o}" for o in DPKG_OPTIONS],
            # no device nodes in the layer: the engine makes /dev
            "--skip=output/dev", "--skip=cleanup/run",
            *[f"--customize-hook={h}" for h in hooks],
            recipe.distribution.suite, str(layer),
            *sources(recipe, mirror, security_mirror)]
