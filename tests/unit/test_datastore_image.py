"""Datastore images built from Debian and Ubuntu packages: the refs, the inputs hash,
the mmdebstrap command, the docker-archive, the cache (with the runner
faked: no mmdebstrap, no network), the command line, and the shell scripts
as far as they run without a server."""
import dataclasses
import hashlib
import io
import json
import os
from pathlib import Path
import shutil
import subprocess
import tarfile

import pytest

from trove_image_builder.build import datastore_image as dsi, images
from trove_image_builder.build.datastore_image import archive, distributions, recipes
from trove_image_builder.errors import BuildError, HostError, InputError

from tests.helpers.cli import assert_error, invoke

MIRROR = recipes.DEFAULT_MIRROR
SECURITY = recipes.DEFAULT_SECURITY_MIRROR
KNOWN = "known: mariadb:11.8, mysql:8.0, postgres:17"
SERVER_VERSIONS = {"mariadb-server": "1:11.8.3-1", "postgresql-17": "17.6-0+deb13u1",
                   "mysql-server-8.0": "8.0.43-0ubuntu0.24.04.1"}
UBUNTU = "http://archive.ubuntu.com/ubuntu"


def hash_of(ref="mariadb:11.8", mirror=MIRROR, security=SECURITY, **changes):
    return recipes.inputs_hash(dataclasses.replace(recipes.RECIPES[ref], **changes),
                               mirror, security)


# --------------------------------------------------------------------------
# refs

def test_the_known_refs():
    assert dsi.known() == ["mariadb:11.8", "mysql:8.0", "postgres:17"]


def test_the_names_are_trove_s_docker_image_defaults():
    """The agent runs <[manager] docker_image>:<version> (trove/common/cfg.py)."""
    from trove.common import cfg
    assert cfg.CONF.get("mariadb").docker_image == "mariadb"
    assert cfg.CONF.get("postgresql").docker_image == "postgres"
    assert cfg.CONF.get("mysql").docker_image == "mysql"


@pytest.mark.parametrize("ref, message", [
    ("mariadb:10.11", "mariadb:10.11: Debian trixie has mariadb-server 11.8, so only "
                      f"mariadb:11.8 can be built here ({KNOWN})"),
    ("postgres:16", "postgres:16: Debian trixie has postgresql-17 17, so only postgres:17 "
                    f"can be built here ({KNOWN})"),
    ("mysql:8.4", "mysql:8.4: Ubuntu noble has mysql-server-8.0 8.0, so only mysql:8.0 "
                  f"can be built here ({KNOWN})"),
    ("percona:8.0", f"percona:8.0: not a datastore image that can be built here ({KNOWN})"),
    ("mariadb", f"mariadb: Debian trixie has mariadb-server 11.8, so only mariadb:11.8 can "
                f"be built here ({KNOWN})"),
])
def test_other_refs_are_refused_naming_the_known_ones(ref, message, tmp_path):
    for call in (dsi.build, dsi.cached):
        with pytest.raises(InputError) as err:
            call(ref, tmp_path)
        assert err.value.message == message


def test_every_file_a_recipe_copies_in_is_shipped():
    for recipe in recipes.RECIPES.values():
        for f in recipe.files:
            assert f.path.is_file(), f.source


# --------------------------------------------------------------------------
# the inputs hash

def test_the_hash_is_stable():
    assert hash_of() == hash_of()
    assert hash_of() != hash_of("postgres:17")


@pytest.mark.parametrize("change", [
    {"mirror": "http://mirror.example/debian"},
    {"security": None},
    {"packages": ("mariadb-server", "mariadb-client", "tzdata", "vim")},
    {"setup": ('rm -rf "$1"/var/lib/mysql/*',)},
    {"cmd": ("mysqld",)},
    {"env": (("PATH", "/usr/bin"),)},
    {"port": 3307},
])
def test_the_hash_changes_with_each_input(change):
    assert hash_of(**change) != hash_of()


def test_the_hash_changes_with_the_content_of_a_file_copied_in(tmp_path, monkeypatch):
    before = hash_of()
    copy = tmp_path / "data"
    shutil.copytree(recipes.DATA, copy)
    monkeypatch.setattr(recipes, "DATA", copy)
    assert hash_of() == before          # where the files are does not count
    script = copy / "mariadb" / "healthcheck.sh"
    script.write_text(script.read_text() + "# changed\n")
    assert hash_of() != before
    assert hash_of("postgres:17") == hash_of("postgres:17")


def test_the_hash_changes_with_the_recipe_version(monkeypatch):
    before = hash_of()
    monkeypatch.setattr(recipes, "RECIPE_VERSION", recipes.RECIPE_VERSION + 1)
    assert hash_of() != before


# --------------------------------------------------------------------------
# the mmdebstrap command

def hooks_of(argv):
    return [a.split("=", 1)[1] for a in argv if a.startswith("--customize-hook=")]


def test_the_mmdebstrap_argv():
    recipe = recipes.RECIPES["mariadb:11.8"]
    argv = recipes.mmdebstrap_argv(recipe, MIRROR + "/", SECURITY, Path("/w/rootfs.tar"),
                                   Path("/w/packages.tsv"))
    assert argv[:6] == ["mmdebstrap", "--variant=minbase", "--mode=root", "--format=tar",
                        "--architectures=amd64",
                        "--keyring=/usr/share/keyrings/debian-archive-keyring.gpg"]
    assert "--include=mariadb-server,mariadb-client,tzdata" in argv
    assert '--aptopt=APT::Install-Recommends "false"' in argv
    assert "--dpkgopt=path-exclude=/usr/share/doc/*" in argv
    assert "--skip=output/dev" in argv
    assert argv[-5:] == [
        "trixie", "/w/rootfs.tar",
        "deb http://deb.debian.org/debian trixie main",
        "deb http://deb.debian.org/debian trixie-updates main",
        "deb http://deb.debian.org/debian-security trixie-security main"]
    hooks = hooks_of(argv)
    for f in recipe.files:
        assert any(h.startswith("install -D -m") and str(f.path) in h and f.target in h
                   for h in hooks), f
    assert 'chroot "$1" groupadd --gid 1001 database' in hooks
    assert hooks[-1].startswith('chroot "$1" dpkg-query --show')
    assert hooks[-1].endswith("> /w/packages.tsv")


def test_no_security_line_without_a_security_mirror():
    argv = recipes.mmdebstrap_argv(recipes.RECIPES["postgres:17"], MIRROR, None,
                                   Path("/w/l.tar"), Path("/w/p"))
    assert argv[-3:] == ["/w/l.tar", "deb http://deb.debian.org/debian trixie main",
                         "deb http://deb.debian.org/debian trixie-updates main"]
    assert "--include=postgresql-17,locales,tzdata,libnss-wrapper" in argv


def test_the_mmdebstrap_argv_of_noble_uses_the_verified_ubuntu_keyring():
    recipe = recipes.RECIPES["mysql:8.0"]
    keyring = Path("/c/ubuntu-keyring/2023.11.28.1/ubuntu-archive-keyring.gpg")
    argv = recipes.mmdebstrap_argv(recipe, UBUNTU, UBUNTU, Path("/w/rootfs.tar"),
                                   Path("/w/packages.tsv"), keyring)
    assert argv[:6] == ["mmdebstrap", "--variant=minbase", "--mode=root", "--format=tar",
                        "--architectures=amd64", f"--keyring={keyring}"]
    assert "--include=mysql-server-8.0,mysql-client-8.0,tzdata" in argv
    assert argv[-5:] == [
        "noble", "/w/rootfs.tar",
        "deb http://archive.ubuntu.com/ubuntu noble main",
        "deb http://archive.ubuntu.com/ubuntu noble-updates main",
        "deb http://archive.ubuntu.com/ubuntu noble-security main"]
    hooks = hooks_of(argv)
    assert hooks[0] == recipes.CLEAN_RUN
    assert any("mysql/docker-entrypoint.sh" in h and "/usr/local/bin/docker-entrypoint.sh" in h
               for h in hooks)
    assert any("/etc/mysql/mysql.conf.d/mysqld.cnf" in h for h in hooks)
    assert 'chroot "$1" useradd --uid 1001 --gid 1001 --no-create-home --home-dir ' \
        '/nonexistent --shell /usr/sbin/nologin database' in hooks


def test_an_ubuntu_recipe_needs_its_keyring_given():
    with pytest.raises(ValueError):
        recipes.mmdebstrap_argv(recipes.RECIPES["mysql:8.0"], UBUNTU, UBUNTU,
                                Path("/w/l.tar"), Path("/w/p"))


def test_each_recipe_names_its_distribution():
    assert {ref: (r.distribution.name, r.distribution.suite)
            for ref, r in recipes.RECIPES.items()} == {
        "mariadb:11.8": ("debian", "trixie"), "postgres:17": ("debian", "trixie"),
        "mysql:8.0": ("ubuntu", "noble")}
    assert recipes.NOBLE.mirrors() == (UBUNTU, UBUNTU)
    assert recipes.TRIXIE.mirrors() == (MIRROR, SECURITY)
    assert recipes.NOBLE.mirrors("http://m/ubuntu", None) == ("http://m/ubuntu", None)


def test_the_mysql_image_runs_as_the_agent_expects():
    """The user the agent passes anyway (database_service_uid), the server
    as the command, and its port (trove/common/cfg.py mysql tcp_ports)."""
    config = recipes.RECIPES["mysql:8.0"].image_config()
    assert config["User"] == "1001:1001"
    assert config["Entrypoint"] == ["/usr/local/bin/docker-entrypoint.sh"]
    assert config["Cmd"] == ["mysqld"]
    assert config["ExposedPorts"] == {"3306/tcp": {}}


def test_the_hash_of_noble_changes_with_the_pinned_keyring(monkeypatch):
    before = hash_of("mysql:8.0", UBUNTU, UBUNTU)
    assert before != hash_of("mysql:8.0", UBUNTU, None)
    monkeypatch.setattr(distributions, "keyring_version", lambda release: "2099.01.01")
    assert hash_of("mysql:8.0", UBUNTU, UBUNTU) != before


def test_packages_are_read_from_dpkg_query():
    text = ("ii \tmariadb-server\t1:11.8.3-1\nrc \told-thing\t1.0\n"
            "ii \tlibc6\t2.41-12\n\n")
    assert dsi.parse_packages(text) == {"mariadb-server": "1:11.8.3-1", "libc6": "2.41-12"}


# --------------------------------------------------------------------------
# the docker-archive

def test_the_archive_is_what_docker_load_reads(tmp_path):
    layer = tmp_path / "layer.tar"
    with tarfile.open(layer, "w") as tar:
        info = tarfile.TarInfo("etc/hello")
        info.size = 5
        tar.addfile(info, io.BytesIO(b"hello"))
    out = tmp_path / "image.tar"
    config = recipes.RECIPES["postgres:17"].image_config()
    image_id = archive.write(layer, "postgres:17", config, out, architecture="amd64",
                             created_by="test")
    assert image_id == images.docker_archive_id(out)
    layer_hex = hashlib.sha256(layer.read_bytes()).hexdigest()
    with tarfile.open(out) as tar:
        [entry] = json.load(tar.extractfile("manifest.json"))
        blob = tar.extractfile(entry["Config"]).read()
        assert tar.extractfile(entry["Layers"][0]).read() == layer.read_bytes()
    assert entry["RepoTags"] == ["postgres:17"]
    assert image_id == "sha256:" + hashlib.sha256(blob).hexdigest()
    document = json.loads(blob)
    assert document["rootfs"] == {"type": "layers", "diff_ids": [f"sha256:{layer_hex}"]}
    assert (document["os"], document["architecture"]) == ("linux", "amd64")
    assert document["config"]["Entrypoint"] == ["/usr/local/bin/docker-entrypoint.sh"]
    assert document["config"]["Cmd"] == ["postgres"]
    assert document["config"]["User"] == "1001:1001"
    assert document["config"]["ExposedPorts"] == {"5432/tcp": {}}
    assert document["config"]["StopSignal"] == "SIGINT"
    assert "PGDATA=/var/lib/postgresql/data" in document["config"]["Env"]


# --------------------------------------------------------------------------
# build and the cache, with the runner faked

class FakeRun:
    """Stands in for mmdebstrap: writes a small layer and the package list
    where the argv says, or fails as told."""

    def __init__(self, versions=None, fail=None):
        self.calls = []
        self.versions = dict(SERVER_VERSIONS, **(versions or {}))
        self.fail = fail

    def __call__(self, argv, env_changes=None, **kwargs):
        self.calls.append((list(argv), dict(env_changes or {})))
        assert argv[0] == "mmdebstrap"
        tmp = Path(env_changes["TMPDIR"])
        assert tmp.is_dir()
        (tmp / "mmdebstrap.partial").write_text("work in progress")
        if self.fail is not None:
            raise self.fail
        layer = Path(argv[next(i for i, a in enumerate(argv) if a in ("trixie", "noble")) + 1])
        with tarfile.open(layer, "w") as tar:
            info = tarfile.TarInfo("usr/local/bin/docker-entrypoint.sh")
            info.size = 3
            tar.addfile(info, io.BytesIO(b"#!\n"))
        listing = Path(hooks_of(argv)[-1].rsplit("> ", 1)[1])
        listing.write_text("".join(f"ii \t{name}\t{version}\n"
                                   for name, version in self.versions.items())
                           + "ii \tlibc6\t2.41-12\n")


@pytest.fixture
def fake_run(monkeypatch, tmp_path):
    fake = FakeRun()
    monkeypatch.setattr(dsi, "run", fake)
    monkeypatch.setattr(dsi, "host_problems", lambda rec: [])
    # the verified Ubuntu keyring, without the network: (mirror, release) asked
    fake.keyrings = []
    keyring = tmp_path / "ubuntu-archive-keyring.gpg"

    def verified_keyring(mirror, release):
        fake.keyrings.append((mirror, release))
        return keyring
    monkeypatch.setattr(dsi.ubuntu_keyring, "verified_keyring", verified_keyring)
    return fake


def leftovers(cache: Path) -> list[str]:
    return sorted(p.name for p in cache.iterdir()) if cache.exists() else []


def test_a_build_writes_the_archive_and_its_sidecar(fake_run, tmp_path):
    cache = tmp_path / "cache"
    image = dsi.build("mariadb:11.8", cache, mirror="http://mirror.example/debian")
    assert len(fake_run.calls) == 1
    argv, env = fake_run.calls[0]
    assert "deb http://mirror.example/debian trixie main" in argv
    assert Path(env["TMPDIR"]).parent.parent == cache      # mmdebstrap's work stays in ours
    assert image.ref == "mariadb:11.8"
    assert image.archive.is_file() and image.archive.parent.parent == cache
    assert image.archive.name == "mariadb-11.8.tar"
    assert image.image_id == images.docker_archive_id(image.archive)
    assert image.size_bytes == image.archive.stat().st_size
    assert image.packages == dict(SERVER_VERSIONS, libc6="2.41-12")
    assert image.inputs_hash == hash_of(mirror="http://mirror.example/debian")
    meta = json.loads(image.archive.with_suffix(".json").read_text())
    assert meta["image_id"] == image.image_id
    assert meta["server_version"] == "1:11.8.3-1"
    assert meta["packages"] == image.packages
    assert meta["archive_sha256"] == hashlib.sha256(image.archive.read_bytes()).hexdigest()
    # only the finished entry is left in the cache: no work folder, no layer
    assert leftovers(cache) == [image.archive.parent.name]
    assert sorted(p.name for p in image.archive.parent.iterdir()) == \
        ["mariadb-11.8.json", "mariadb-11.8.tar"]


def test_a_mysql_build_takes_noble_with_the_verified_keyring(fake_run, tmp_path):
    cache = tmp_path / "cache"
    image = dsi.build("mysql:8.0", cache)
    assert fake_run.keyrings == [(UBUNTU, "noble")]
    argv, _env = fake_run.calls[0]
    assert f"--keyring={tmp_path / 'ubuntu-archive-keyring.gpg'}" in argv
    assert argv[-3:] == ["deb http://archive.ubuntu.com/ubuntu noble main",
                         "deb http://archive.ubuntu.com/ubuntu noble-updates main",
                         "deb http://archive.ubuntu.com/ubuntu noble-security main"]
    assert image.archive.name == "mysql-8.0.tar"
    meta = json.loads(image.archive.with_suffix(".json").read_text())
    assert (meta["distribution"], meta["suite"]) == ("ubuntu", "noble")
    assert meta["server_version"] == "8.0.43-0ubuntu0.24.04.1"
    assert dsi.cached("mysql:8.0", cache) == image
    assert dsi.cached("mysql:8.0", cache, mirror=UBUNTU, security_mirror=UBUNTU) == image
    # a mirror of its own: the keyring comes from that mirror's pool too
    dsi.build("mysql:8.0", cache, mirror="http://m.example/ubuntu", security_mirror=None)
    assert fake_run.keyrings[-1] == ("http://m.example/ubuntu", "noble")
    assert not any("security" in a for a in fake_run.calls[-1][0])


def test_a_debian_build_asks_for_no_ubuntu_keyring(fake_run, tmp_path):
    dsi.build("postgres:17", tmp_path / "cache")
    assert fake_run.keyrings == []


@pytest.mark.parametrize("ref, distro, expected", [
    ("mysql:8.0", "debian", {}),
    ("mysql:8.0", "ubuntu", {"mirror": "http://m/ubuntu"}),
    ("mariadb:11.8", "debian", {"mirror": "http://m/ubuntu"}),
    ("mariadb:11.8", "ubuntu", {}),
])
def test_an_os_s_mirrors_apply_only_to_its_own_packages(ref, distro, expected):
    assert dsi.mirrors_for(ref, distro, "http://m/ubuntu", None) == expected


def test_a_host_without_gpg_cannot_check_the_ubuntu_keyring(tmp_path, monkeypatch):
    monkeypatch.setattr(dsi.host, "which", lambda tool: None if tool == "gpg" else tool)
    monkeypatch.setattr(dsi.os, "geteuid", lambda: 0)
    with pytest.raises(HostError) as err:
        dsi.build("mysql:8.0", tmp_path / "cache")
    assert err.value.message == ("cannot build mysql:8.0: gpg is missing (it checks the "
                                 "Ubuntu noble archive keyring): install 'gpg'")


def test_a_second_build_is_the_cached_one_without_running_anything(fake_run, tmp_path):
    cache = tmp_path / "cache"
    assert dsi.cached("postgres:17", cache) is None
    first = dsi.build("postgres:17", cache)
    again = dsi.build("postgres:17", cache)
    assert again == first
    assert dsi.cached("postgres:17", cache) == first
    assert len(fake_run.calls) == 1
    # other inputs, other entry
    assert dsi.cached("postgres:17", cache, mirror="http://mirror.example/debian") is None


def test_a_cache_hit_needs_no_tools(fake_run, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    first = dsi.build("mariadb:11.8", cache)
    monkeypatch.setattr(dsi, "host_problems", lambda rec: ["mmdebstrap is missing"])
    assert dsi.build("mariadb:11.8", cache) == first


def test_a_damaged_entry_is_not_a_hit(fake_run, tmp_path):
    cache = tmp_path / "cache"
    first = dsi.build("mariadb:11.8", cache)
    with open(first.archive, "ab") as fh:
        fh.write(b"x")
    assert dsi.cached("mariadb:11.8", cache) is None
    dsi.build("mariadb:11.8", cache)
    assert len(fake_run.calls) == 2


def test_rebuild_builds_again_and_replaces_the_entry(fake_run, tmp_path):
    cache = tmp_path / "cache"
    first = dsi.build("mariadb:11.8", cache)
    fake_run.versions["mariadb-server"] = "1:11.8.4-1"
    second = dsi.build("mariadb:11.8", cache, rebuild=True)
    assert len(fake_run.calls) == 2
    assert second.archive == first.archive
    assert second.packages["mariadb-server"] == "1:11.8.4-1"
    assert dsi.cached("mariadb:11.8", cache) == second
    assert leftovers(cache) == [first.archive.parent.name]


@pytest.mark.parametrize("failure", [BuildError("command failed with exit code 1: mmdebstrap"),
                                     KeyboardInterrupt()])
def test_a_failed_or_interrupted_build_leaves_nothing(failure, tmp_path, monkeypatch):
    monkeypatch.setattr(dsi, "run", FakeRun(fail=failure))
    monkeypatch.setattr(dsi, "host_problems", lambda rec: [])
    cache = tmp_path / "cache"
    with pytest.raises(type(failure)):
        dsi.build("mariadb:11.8", cache)
    assert leftovers(cache) == []


def test_a_server_of_another_version_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(dsi, "run", FakeRun(versions={"mariadb-server": "1:11.4.7-1"}))
    monkeypatch.setattr(dsi, "host_problems", lambda rec: [])
    cache = tmp_path / "cache"
    with pytest.raises(BuildError) as err:
        dsi.build("mariadb:11.8", cache)
    assert err.value.message == ("mariadb:11.8: the mirror's mariadb-server is 1:11.4.7-1, "
                                 "not 11.8: the tag would lie about it")
    assert leftovers(cache) == []


def test_a_host_without_the_tools_is_told_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setattr(dsi.host, "which", lambda tool: None)
    monkeypatch.setattr(dsi.os, "geteuid", lambda: 1000)
    monkeypatch.setattr(distributions, "TRIXIE_KEY", tmp_path / "missing.gpg")
    with pytest.raises(HostError) as err:
        dsi.build("postgres:17", tmp_path / "cache")
    assert err.value.message == (
        "cannot build postgres:17: mmdebstrap --mode=root needs root: run as root; "
        "mmdebstrap is missing: install 'mmdebstrap'; "
        "/usr/share/keyrings/debian-archive-keyring.gpg cannot verify Debian trixie: "
        "install debian-archive-keyring 2023.3+deb12u2 or later")
    assert leftovers(tmp_path / "cache") == []


def test_the_default_cache_is_in_the_build_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("TROVE_IMAGE_BUILDER_CACHE", str(tmp_path))
    assert dsi.default_cache() == tmp_path / "datastore-images"


# --------------------------------------------------------------------------
# the command line

@pytest.fixture
def cache_env(tmp_path, monkeypatch):
    monkeypatch.setenv("TROVE_IMAGE_BUILDER_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache" / "datastore-images"


def test_cli_list_says_what_is_cached(fake_run, cache_env):
    result = invoke("datastore-image", "list")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == ["mariadb:11.8     not cached",
                                          "mysql:8.0        not cached",
                                          "postgres:17      not cached"]
    image = dsi.build("postgres:17")
    lines = invoke("datastore-image", "list").stdout.splitlines()
    assert lines[2] == f"postgres:17      cached  {image.image_id[:19]}  {image.archive}"


def test_cli_build_prints_a_summary_and_copies_the_archive(fake_run, cache_env, tmp_path):
    out = tmp_path / "out" / "mariadb.tar"
    out.parent.mkdir()
    result = invoke("datastore-image", "build", "mariadb:11.8", "-o", str(out),
                    "--mirror", "http://mirror.example/debian", "--security-mirror", "")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    image = dsi.cached("mariadb:11.8", mirror="http://mirror.example/debian",
                       security_mirror=None)
    assert summary == {"ref": "mariadb:11.8", "image_id": image.image_id,
                       "archive": str(image.archive), "size_bytes": image.size_bytes,
                       "packages": 4, "server_package": "mariadb-server",
                       "server_version": "1:11.8.3-1", "inputs_hash": image.inputs_hash,
                       "output": str(out)}
    assert out.read_bytes() == image.archive.read_bytes()
    assert sorted(p.name for p in out.parent.iterdir()) == ["mariadb.tar"]
    argv, _env = fake_run.calls[0]
    assert not any("security" in a for a in argv)


def test_cli_build_refuses_an_unknown_ref_in_one_line(cache_env):
    assert_error(invoke("datastore-image", "build", "percona:8.0"),
                 f"percona:8.0: not a datastore image that can be built here ({KNOWN})")


def test_cli_build_on_a_host_without_mmdebstrap(cache_env, monkeypatch):
    monkeypatch.setattr(dsi, "host_problems", lambda rec: ["mmdebstrap is missing: install it"])
    assert_error(invoke("datastore-image", "build", "postgres:17"),
                 "cannot build postgres:17: mmdebstrap is missing: install it", exit_code=3)


# --------------------------------------------------------------------------
# the shell scripts in the images

SCRIPTS = sorted(p for p in recipes.DATA.glob("*/*.sh"))


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_the_scripts_parse_and_pass_shellcheck(script):
    assert script.read_text().startswith("#!/bin/bash\n")
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    if shutil.which("shellcheck") is None:
        pytest.skip("needs shellcheck")
    done = subprocess.run(["shellcheck", str(script)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout


@pytest.mark.parametrize("datastore", ["mariadb", "mysql", "postgresql"])
def test_an_entrypoint_runs_any_other_command_as_given(datastore):
    script = recipes.DATA / datastore / "docker-entrypoint.sh"
    done = subprocess.run(["bash", str(script), "printf", "%s|", "a b", "c"],
                          capture_output=True, text=True, env={"PATH": os.environ["PATH"]})
    assert (done.returncode, done.stdout, done.stderr) == (0, "a b|c|", "")


@pytest.mark.parametrize("argv, message", [
    ([], "healthcheck: name at least one test"),
    (["--connect", "--bogus"], "healthcheck: unknown option or test: --bogus"),
    (["--defaults-file"], "healthcheck: --defaults-file needs a file"),
])
def test_the_health_check_refuses_what_it_does_not_know(argv, message):
    done = subprocess.run(["bash", str(recipes.DATA / "mariadb" / "healthcheck.sh"), *argv],
                          capture_output=True, text=True)
    assert (done.returncode, done.stderr.strip()) == (2, message)
