"""Real images, built once per test run and shared by the tests."""
import json
import os
import shutil
from pathlib import Path
import subprocess
import sys

import pytest

from tests.helpers.cli import REPO, cli
from trove_image_builder.build import datastore_image


class BuiltImage:
    def __init__(self, path: Path, proc: subprocess.CompletedProcess):
        self.path = path
        self.proc = proc

    @property
    def manifest(self) -> dict:
        return json.loads(self.path.with_name(self.path.name + ".manifest.json").read_text())


@pytest.fixture(scope="session")
def images_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("images")


def _build(images_dir: Path, profile: str, *extra) -> BuiltImage:
    out = images_dir / f"{Path(profile).stem}.qcow2"
    proc = cli("build", profile, "-o", str(out), *extra)
    sys.stderr.write(proc.stderr[-3000:])
    assert proc.returncode == 0, proc.stderr[-3000:]
    return BuiltImage(out, proc)


@pytest.fixture(scope="session")
def prod_mariadb(images_dir) -> BuiltImage:
    """prod-mariadb built for real with DIB, once per run."""
    return _build(images_dir, "prod-mariadb")


@pytest.fixture(scope="session")
def mariadb_package(images_dir) -> BuiltImage:
    """mariadb-package (MariaDB from Debian packages, agentless), once per run."""
    return _build(images_dir, "mariadb-package")


def _postgresql_vc_args(images_dir: Path) -> tuple[Path, list]:
    out = images_dir / "vc"
    out.mkdir(exist_ok=True)
    hook = out / "fetch-certs"
    hook.write_text("#!/bin/sh\n# fetch from the site's store\n")
    image = out / "prod-postgresql.qcow2"
    return image, ["build", "prod-postgresql", "-o", str(image), "--backend",
                   "virt-customize", "--set", f"certificates.user_hook={hook}"]


class BackgroundBuild:
    """A build started in a subprocess early in the run, awaited by the
    fixture that needs its image."""

    def __init__(self, image: Path, argv: list):
        self.image = image
        self.out = image.with_name(image.name + ".stdout")
        self.err = image.with_name(image.name + ".stderr")
        with open(self.out, "w") as out, open(self.err, "w") as err:
            self.proc = subprocess.Popen([sys.executable, "-m", "trove_image_builder.cli",
                                          *argv], cwd=REPO, stdout=out, stderr=err, text=True)

    def wait(self, timeout=3600) -> BuiltImage:
        code = self.proc.wait(timeout=timeout)
        proc = subprocess.CompletedProcess(self.proc.args, code, self.out.read_text(),
                                           self.err.read_text())
        sys.stderr.write(proc.stderr[-3000:])
        assert code == 0, proc.stderr[-3000:]
        return BuiltImage(self.image, proc)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()       # the build cleans up on SIGTERM
            self.proc.wait(timeout=300)


@pytest.fixture(scope="session", autouse=True)
def early_virt_customize_build(request, images_dir):
    """The virt-customize build runs mostly inside libguestfs's appliance, on
    one core under TCG: started in the background when the run begins, it
    overlaps the DIB builds and the cheap tests instead of adding its
    minutes after them. Only when a collected test needs prod_postgresql."""
    if os.geteuid() != 0 or not any("prod_postgresql" in getattr(item, "fixturenames", ())
                                    for item in request.session.items):
        yield None
        return
    # its datastore image first, so that no two builds make it at once
    request.getfixturevalue("postgres_image")
    build = BackgroundBuild(*_postgresql_vc_args(images_dir))
    yield build
    build.stop()


@pytest.fixture(scope="session")
def prod_postgresql(images_dir, early_virt_customize_build) -> BuiltImage:
    """prod-postgresql through the virt-customize backend, once per run: the
    other backend on the other shipped production profile (CI builds each
    real image once; DIB builds prod-mariadb). With a certificate user hook
    of an operator's own, named relative to the current folder. Started
    early, in the background (early_virt_customize_build)."""
    if early_virt_customize_build is not None:
        return early_virt_customize_build.wait()
    image, argv = _postgresql_vc_args(images_dir)
    proc = cli(*argv)
    sys.stderr.write(proc.stderr[-3000:])
    assert proc.returncode == 0, proc.stderr[-3000:]
    return BuiltImage(image, proc)


@pytest.fixture(scope="session")
def trove_checkout(tmp_path_factory) -> Path:
    """A local Trove source tree for the dev loop: the 26.0.0 source
    release from the package index, unpacked (it carries PKG-INFO, so pbr
    needs no git history)."""
    where = tmp_path_factory.mktemp("trove-source")
    subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps",
                    "--no-binary", ":all:", "-d", str(where), "trove==26.0.0"],
                   check=True, capture_output=True, text=True)
    tarball = next(where.glob("trove-*.tar.gz"))
    subprocess.run(["tar", "-C", str(where), "-xzf", str(tarball)], check=True)
    tree = next(p for p in where.iterdir() if p.is_dir())
    assert (tree / "setup.cfg").is_file()
    return tree


@pytest.fixture(scope="session")
def dev_mariadb(images_dir, trove_checkout) -> BuiltImage:
    """dev-mariadb built for real, agent from the local source tree."""
    return _build(images_dir, "dev-mariadb", "--set", f"trove_source={trove_checkout}")


@pytest.fixture(scope="session")
def small_image_layout(tmp_path_factory) -> tuple[Path, Path]:
    """A small container image made here with real tools from the OS
    packages: a busybox root file system packed by umoci into an OCI layout,
    and the same image as a docker-archive by skopeo. Returns both."""
    where = tmp_path_factory.mktemp("container-image")
    layout, bundle = where / "layout", where / "bundle"

    def sh(*argv):
        subprocess.run(argv, check=True, capture_output=True, text=True, cwd=where)

    sh("umoci", "init", "--layout", str(layout))
    sh("umoci", "new", "--image", f"{layout}:1.0")
    sh("umoci", "unpack", "--rootless", "--image", f"{layout}:1.0", str(bundle))
    (bundle / "rootfs" / "bin").mkdir(parents=True, exist_ok=True)
    shutil.copy("/bin/busybox", bundle / "rootfs" / "bin" / "busybox")
    (bundle / "rootfs" / "bin" / "sh").symlink_to("busybox")
    sh("umoci", "repack", "--image", f"{layout}:1.0", str(bundle))
    sh("umoci", "config", "--image", f"{layout}:1.0", "--config.cmd", "/bin/sh")
    archive = where / "tools-1.0.tar"
    sh("skopeo", "copy", "--quiet", f"oci:{layout}:1.0",
       f"docker-archive:{archive}:tools:1.0")
    return layout, archive


@pytest.fixture(scope="session")
def mariadb_image():
    """mariadb:11.8 built from Debian trixie packages, in the default cache
    (so that a guest image build later in the run reuses it)."""
    return datastore_image.build("mariadb:11.8")


@pytest.fixture(scope="session")
def postgres_image():
    """postgres:17 built from Debian trixie packages, in the default cache."""
    return datastore_image.build("postgres:17")


@pytest.fixture(scope="session")
def mysql_image():
    """mysql:8.0 built from Ubuntu noble packages, in the default cache."""
    return datastore_image.build("mysql:8.0")


@pytest.fixture(scope="session")
def prod_mysql_noble(images_dir, mysql_image) -> BuiltImage:
    """prod-mysql-noble (Ubuntu noble, MySQL 8.0 in a container) built for
    real with DIB, once per run."""
    return _build(images_dir, "prod-mysql-noble")


@pytest.fixture(scope="session", autouse=True)
def _needs_root():
    if os.geteuid() != 0:
        pytest.skip("integration tests build images: run as root")


USER_DATA = Path(__file__).resolve().parent / "data"


@pytest.fixture(scope="session")
def redis_package(images_dir) -> BuiltImage:
    """A datastore element of the tests' own (redis, from --elements-path),
    built with the package runtime, agentless."""
    return _build(images_dir, str(USER_DATA / "redis-package.yaml"),
                  "--elements-path", str(USER_DATA / "elements"))


# Cheap checks first (seconds: a broker, loop devices, the datastore
# images), then the image builds with their offline checks, then the boots.
ORDER = ("test_rabbit_tls", "test_trove_certs_volume", "test_ubuntu_keyring",
         "test_shipped_profiles", "test_datastore_images",
         "test_build", "test_layered_build", "test_verify", "test_sbom_diff", "test_publish",
         "test_container_runtime", "test_virt_customize", "test_user_datastore",
         "test_prepare", "test_register", "test_dev_loop", "test_certificates")


def pytest_collection_modifyitems(items):
    def rank(item):
        name = item.module.__name__.rsplit(".", 1)[-1]
        return ORDER.index(name) if name in ORDER else len(ORDER)
    items.sort(key=rank)      # stable: the order inside a file stays
