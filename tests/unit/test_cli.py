"""The command line, through click's test runner (no subprocess, no build)."""
import importlib.metadata
import json
from pathlib import Path
import re
import shlex
import subprocess
import sys
import textwrap

import click
import pytest
import yaml

from trove_image_builder.build.plan import default_output
from trove_image_builder import __version__, profile as profiles
from trove_image_builder.build import backends, stage as build_mod
from trove_image_builder.cli import main
from trove_image_builder.errors import BuildError, ExitCode, HostError

from tests.helpers.cli import REPO, assert_error, invoke as run

SHIPPED = sorted(profiles.available())


@pytest.fixture
def cache(tmp_path, monkeypatch):
    path = tmp_path / "cache"
    monkeypatch.setenv("TROVE_IMAGE_BUILDER_CACHE", str(path))
    return path


def lines(text):
    return text.splitlines()


# --------------------------------------------------------------------------
# profiles

def test_profiles_list_lists_every_shipped_profile():
    result = run("profiles", "list")
    assert result.exit_code == 0, result.output
    header, *rows = lines(result.stdout)
    start = header.index("DESCRIPTION")     # after the OS and DATASTORE columns
    listed = {ln.split()[0]: ln[start:] for ln in rows}
    assert sorted(listed) == SHIPPED
    for name in SHIPPED:
        assert listed[name] == profiles.load(name).description
        assert "invalid" not in listed[name]


def test_profiles_list_marks_an_invalid_profile(tmp_path, monkeypatch):
    (tmp_path / "good.yaml").write_text("name: good\ndescription: fine\n"
                                        "guest_agent: {install: none}\n")
    (tmp_path / "broken.yaml").write_text("name: broken\ncolour: blue\n")
    monkeypatch.setattr(profiles, "profiles_dir", lambda: tmp_path)
    result = run("profiles", "list")
    assert result.exit_code == 0, result.output
    out = lines(result.stdout)[1:]          # below the header
    assert len(out) == 2
    assert out[0].startswith("broken ") and "(invalid: " in out[0] and "colour" in out[0]
    assert out[1].split() == ["good", "debian", "trixie", "-", "fine"]


def test_profiles_show_with_set():
    result = run("profiles", "show", "prod-mariadb", "--set", "image.size=6G")
    assert result.exit_code == 0, result.output
    out = lines(result.stdout)
    expected = profiles.load("prod-mariadb", ["image.size=6G"])
    assert out[0] == f"# {expected.source}"
    assert out[1] == f"# digest: {expected.digest()}"
    shown = yaml.safe_load(result.stdout)
    assert shown["image"]["size"] == "6G"
    assert shown["datastore"] == {"name": "mariadb", "version": "11.8", "runtime": "container",
                                  "image": "built", "images": []}
    assert shown == expected.to_dict()


def test_profiles_show_output_loads_back_to_the_same_profile(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = run("profiles", "show", "prod-postgresql")
    assert result.exit_code == 0, result.output
    (tmp_path / "again.yaml").write_text(result.stdout)
    again = run("profiles", "show", "again.yaml")
    assert again.exit_code == 0, again.output
    assert lines(again.stdout)[1] == lines(result.stdout)[1]  # same digest


@pytest.mark.parametrize("name", SHIPPED)
def test_profiles_show_every_shipped_profile(name):
    result = run("profiles", "show", name)
    assert result.exit_code == 0, result.output
    assert yaml.safe_load(result.stdout)["name"] == name


def test_profiles_settings():
    result = run("profiles", "settings")
    assert result.exit_code == 0
    rows = {ln.split()[0]: ln for ln in lines(result.stdout)}
    assert "qcow2 | raw | vhd" in rows["image.format"]
    assert set(rows) == {name for name, _a, _h in profiles.describe_settings()}


# --------------------------------------------------------------------------
# elements

def test_elements_list_shows_the_shipped_elements():
    result = run("elements", "list")
    assert result.exit_code == 0, result.output
    rows = {ln.split()[0]: ln for ln in lines(result.stdout)}
    assert {"trove-guest", "guest-agent", "mariadb", "postgresql", "dev-access"} <= set(rows)
    assert rows["mariadb"].endswith("[datastore: mariadb]")
    assert rows["postgresql"].endswith("[datastore: postgresql]")
    assert "[datastore" not in rows["trove-guest"]
    assert "The MariaDB datastore for Trove." in rows["mariadb"]
    # diskimage-builder's own only with --all
    assert "vm" not in rows and "debian-minimal" not in rows


def test_elements_list_all_includes_dibs():
    result = run("elements", "list", "--all")
    assert result.exit_code == 0, result.output
    rows = {ln.split()[0]: ln for ln in lines(result.stdout)}
    assert rows["vm"].endswith("(dib)")
    assert rows["debian-minimal"].endswith("(dib)")
    assert not rows["mariadb"].endswith(")")


def test_elements_list_with_a_user_folder(tmp_path):
    folder = tmp_path / "mine" / "redis"
    folder.mkdir(parents=True)
    (folder / "README.rst").write_text("=====\nredis\n=====\nRedis for Trove.\n")
    (folder / "datastore.yaml").write_text(textwrap.dedent("""
        name: redis
        runtimes: [package]
        package: redis-server
        service: redis-server
        data_dir: /var/lib/redis
    """))
    result = run("elements", "list", "--elements-path", str(tmp_path / "mine"))
    assert result.exit_code == 0, result.output
    rows = {ln.split()[0]: ln for ln in lines(result.stdout)}
    assert rows["redis"].split(None, 1)[1] == "Redis for Trove. [datastore: redis] (user)"


def test_elements_list_missing_folder(tmp_path):
    missing = tmp_path / "nope"
    assert_error(run("elements", "list", "--elements-path", str(missing)),
                 f"--elements-path {missing}: no such folder")


# --------------------------------------------------------------------------
# build --dry-run

def dry_run_output(result):
    exports, commands = {}, []
    for ln in lines(result.stdout):
        if ln.startswith("export "):
            key, _, value = ln[len("export "):].partition("=")
            exports[key] = shlex.split(value)[0] if value else ""
        else:
            commands.append(shlex.split(ln))
    return exports, commands


def test_build_dry_run_prints_the_command(cache, shipped_elements_dir):
    result = run("build", "prod-mariadb", "--dry-run")
    assert result.exit_code == 0, result.output
    assert any(ln.startswith("export ELEMENTS_PATH=") for ln in lines(result.stdout))
    exports, commands = dry_run_output(result)
    assert len(commands) == 1
    argv = commands[0]
    assert argv[0] == "disk-image-create"
    assert argv[-8:] == ["debian-minimal", "vm", "block-device-mbr", "trove-guest",
                         "container-engine", "mariadb", "guest-agent", "trove-certs"]
    assert str(shipped_elements_dir) in exports["ELEMENTS_PATH"].split(":")
    assert exports["DIB_RELEASE"] == "trixie"
    assert exports["TMP_DIR"] == str(cache / "work" / "BUILD" / "tmp")
    assert exports["DIB_CLOUD_INIT_DATASOURCES"] == "ConfigDrive, OpenStack"
    # a dry run builds nothing and makes no folders
    assert not cache.exists()


def test_build_dry_run_with_set(cache):
    result = run("build", "prod-mariadb", "--dry-run", "--set", "image.size=6G",
                 "--set", "image.compression=none")
    assert result.exit_code == 0, result.output
    _exports, [argv] = dry_run_output(result)
    assert argv[argv.index("--image-size") + 1] == "6"
    assert "-u" in argv


def test_build_dry_run_dev_profile_shows_the_key_placeholder(cache, tmp_path):
    source = tmp_path / "trove"
    source.mkdir()
    (source / "setup.cfg").write_text("[metadata]\nname = trove\n")
    result = run("build", "dev-mariadb", "--dry-run", "--set", f"trove_source={source}")
    assert result.exit_code == 0, result.output
    exports, [argv] = dry_run_output(result)
    assert exports["TROVE_DEV_SSH_PUBKEY"] == "<per-build key, generated at build time>"
    assert exports["TROVE_GUEST_AGENT_SOURCE"] == str(source)
    assert argv[-1] == "dev-access"


def test_build_dry_run_refuses_a_source_that_is_not_a_checkout(cache, tmp_path):
    result = run("build", "dev-mariadb", "--dry-run", "--set", f"trove_source={tmp_path}")
    source = Path(__file__).resolve().parents[2] / "profiles" / "dev-mariadb.yaml"
    assert_error(result, f"{source}: guest_agent.path: {tmp_path} is not a Trove checkout "
                 "(no setup.cfg); give one with --set trove_source=PATH")


def test_build_dry_run_with_the_named_backend(cache):
    result = run("build", "prod-mariadb", "--dry-run", "--backend", "dib")
    assert result.exit_code == 0, result.output


# --------------------------------------------------------------------------
# build (the library's build replaced at the seam)

@pytest.fixture
def fake_build(monkeypatch):
    calls = []

    def fake(profile, output=None, extra_paths=(), backend_name=None, verify_hook=None):
        calls.append((profile.name, output, tuple(extra_paths), backend_name))
        if isinstance(fake.raises, BaseException):
            raise fake.raises
        image = Path(output) if output else default_output(profile)
        return image, {"image": {"sha256": "ab" * 32, "size_bytes": 1234},
                       "timings": {"total": 12.5}}
    fake.raises = None
    fake.calls = calls
    monkeypatch.setattr(build_mod, "build", fake)
    return fake


def test_build_prints_a_json_summary(fake_build):
    result = run("build", "prod-mariadb", "--set", "image.size=6G")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {
        "image": "out/prod-mariadb.qcow2", "sha256": "ab" * 32,
        "size_bytes": 1234, "seconds": 12.5}
    assert fake_build.calls == [("prod-mariadb", None, (), None)]


def test_build_with_output_and_backend(fake_build, tmp_path):
    out = tmp_path / "x.qcow2"
    result = run("build", "prod-mariadb", "-o", str(out), "--backend", "dib")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["image"] == str(out)
    assert fake_build.calls == [("prod-mariadb", str(out), (), "dib")]


def test_build_summary_with_a_user_datastore(fake_build, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    folder = tmp_path / "mine" / "redis"
    folder.mkdir(parents=True)
    (folder / "datastore.yaml").write_text(
        "name: redis\nruntimes: [package]\npackage: redis-server\n"
        "service: redis-server\ndata_dir: /var/lib/redis\n")
    (tmp_path / "r.yaml").write_text("extends: prod-mariadb\nname: r\n"
                                     "datastore: {name: redis, version: '7', runtime: package}\n"
                                     "guest_agent: {install: none}\n")
    result = run("build", "r.yaml", "--elements-path", "mine")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["image"] == "out/r.qcow2"


@pytest.mark.parametrize("exc, code, message", [
    (HostError("this host cannot build: root: not root"), 3,
     "this host cannot build: root: not root"),
    (BuildError("disk-image-create failed with exit code 1"), 1,
     "disk-image-create failed with exit code 1"),
    (KeyboardInterrupt(), 130, "interrupted; nothing was written to the output path"),
    (RuntimeError("boom"), 70,
     "internal error: RuntimeError: boom (run with --debug for the traceback)"),
])
def test_build_failures_become_exit_codes(fake_build, exc, code, message):
    fake_build.raises = exc
    assert_error(run("build", "prod-mariadb"), message, exit_code=code)


def test_debug_shows_the_library_error(fake_build):
    fake_build.raises = BuildError("failed")
    result = run("--debug", "build", "prod-mariadb")
    assert isinstance(result.exception, BuildError)


# --------------------------------------------------------------------------
# errors: exit code 2, one 'Error:' line, no traceback

def test_show_unknown_profile():
    names = ", ".join(SHIPPED)
    assert_error(run("profiles", "show", "nosuch"),
                 f"no profile named 'nosuch'; available: {names} "
                 "(see 'trove-image-builder profiles list')")


def test_show_malformed_yaml(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "bad.yaml").write_text("name: bad\nguest_agent: {install: none}\n"
                                       "image: size: 4G\n")
    assert_error(run("profiles", "show", "bad.yaml"),
                 "bad.yaml: line 3: malformed YAML: mapping values are not allowed here")


@pytest.mark.parametrize("command", [("profiles", "show"), ("build",)])
def test_unknown_key(tmp_path, monkeypatch, command, cache):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a.yaml").write_text("name: a\nguest_agent: {install: none}\n"
                                     "os:\n  flavour: sid\n")
    args = [*command, "a.yaml"] + (["--dry-run"] if command == ("build",) else [])
    assert_error(run(*args),
                 "a.yaml: os.flavour: unknown key; allowed: distro, release, "
                 "mirror, security_mirror, kernel")


def test_set_without_equals():
    assert_error(run("profiles", "show", "prod-mariadb", "--set", "image.size"),
                 "--set image.size: expected KEY=VALUE")


def test_unknown_element_in_build(tmp_path, monkeypatch, cache):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a.yaml").write_text("extends: prod-mariadb\nname: a\nelements: [nope]\n")
    assert_error(run("build", "a.yaml", "--dry-run"),
                 "a.yaml: elements: unknown element 'nope'; see 'trove-image-builder "
                 "elements list', or add its folder with --elements-path")


def test_unknown_backend_is_a_usage_error():
    result = run("build", "prod-mariadb", "--dry-run", "--backend", "nosuch")
    assert result.exit_code == 2
    assert "Usage:" in result.stderr
    assert "Invalid value for '--backend'" in result.stderr
    assert "Traceback" not in result.output


def test_check_with_unknown_backend_is_a_usage_error():
    result = run("check", "--backend", "nosuch")
    assert result.exit_code == 2
    assert "Invalid value for '--backend': 'nosuch' is not one of 'dib', 'virt-customize'." \
        in result.stderr


def test_unknown_command_is_a_usage_error():
    result = run("frobnicate")
    assert result.exit_code == 2
    assert "No such command" in result.stderr


# --------------------------------------------------------------------------
# exit codes: one table (errors.ExitCode), applied at the root group

def test_the_exit_code_table():
    assert {code.name: int(code) for code in ExitCode} == {
        "OK": 0, "FAILED": 1, "BAD_INPUT": 2, "HOST": 3, "INTERNAL": 70, "INTERRUPTED": 130}


def test_the_readme_names_every_exit_code():
    text = " ".join((REPO / "README.md").read_text().split())
    sentence = re.search(r"Exit codes: (.*?)\.( |$)", text).group(1)
    assert [int(n) for n in re.findall(r"(?:^|, )(\d+) ", sentence)] == sorted(ExitCode)


def test_an_unexpected_exception_is_an_internal_error(monkeypatch):
    def broken():
        raise ZeroDivisionError("division by zero")
    monkeypatch.setattr(profiles, "describe_settings", broken)
    assert_error(run("profiles", "settings"),
                 "internal error: ZeroDivisionError: division by zero "
                 "(run with --debug for the traceback)", exit_code=70)


def test_debug_shows_the_unexpected_exception(monkeypatch):
    def broken():
        raise ZeroDivisionError("division by zero")
    monkeypatch.setattr(profiles, "describe_settings", broken)
    result = run("--debug", "profiles", "settings")
    assert isinstance(result.exception, ZeroDivisionError)


# --------------------------------------------------------------------------
# help and version

def walk(command, path=()):
    yield path, command
    if isinstance(command, click.Group):
        for name, sub in command.commands.items():
            yield from walk(sub, path + (name,))


ALL_COMMANDS = list(walk(main))


def test_the_command_tree():
    paths = {" ".join(p) for p, _c in ALL_COMMANDS}
    assert {"profiles list", "profiles show", "profiles settings", "elements list",
            "check", "build"} <= paths


@pytest.mark.parametrize("path, command", ALL_COMMANDS,
                         ids=[" ".join(p) or "main" for p, _c in ALL_COMMANDS])
def test_every_command_has_help(path, command):
    assert command.help and command.help.strip(), path
    for param in command.params:
        if isinstance(param, click.Option) and not param.hidden:
            assert param.help and param.help.strip(), (path, param.name)
    result = run(*path, "--help")
    assert result.exit_code == 0, result.output
    assert command.help.strip().splitlines()[0] in result.stdout


def examples(command) -> list[str]:
    """The lines of the 'Example:' or 'Examples:' block of command's help."""
    lines = [ln.strip() for ln in command.help.splitlines()]
    if not {"Example:", "Examples:"} & set(lines):
        return []
    start = next(i for i, ln in enumerate(lines) if ln in ("Example:", "Examples:"))
    block = lines[start + 1:]
    return block[:block.index("")] if "" in block else block


LEAF_COMMANDS = [(p, c) for p, c in ALL_COMMANDS if not isinstance(c, click.Group)]
LEAF_IDS = [" ".join(p) for p, _c in LEAF_COMMANDS]


@pytest.mark.parametrize("path, command", LEAF_COMMANDS, ids=LEAF_IDS)
def test_every_command_has_an_example_that_parses(path, command):
    found = examples(command)
    assert found, f"'{' '.join(path)}': no 'Example:' block in its docstring"
    assert "Example" in run(*path, "--help").stdout
    for line in found:
        argv = shlex.split(line, comments=True)
        assert argv[:1 + len(path)] == ["trove-image-builder", *path], line
        # an unknown option or a missing argument fails before --help is seen
        result = run(*argv[1:], "--help")
        assert result.exit_code == 0, (line, result.output)


@pytest.mark.parametrize("exc, code, message", [
    (OSError("disk on fire"), 70,
     "internal error: OSError: disk on fire (run with --debug for the traceback)"),
    (KeyboardInterrupt(), 130, "interrupted; nothing was written to the output path"),
    (HostError("no KVM"), 3, "no KVM"),
])
@pytest.mark.parametrize("path, command", LEAF_COMMANDS, ids=LEAF_IDS)
def test_whatever_a_command_raises_becomes_an_exit_code(path, command, exc, code, message,
                                                        monkeypatch):
    def broken(**kwargs):
        raise exc
    monkeypatch.setattr(command, "callback", broken)
    arguments = ["x"] * sum(isinstance(p, click.Argument) for p in command.params)
    assert_error(run(*path, *arguments), message, exit_code=code)


@pytest.mark.parametrize("name", ["build", "verify", "boot"])
def test_build_verify_and_boot_take_the_same_profile_options(name):
    by_flag = {flag: p for p in main.commands[name].params for flag in p.opts}
    assert (by_flag["--set"].name, by_flag["--set"].multiple) == ("sets", True)
    assert (by_flag["--elements-path"].name, by_flag["--elements-path"].multiple) == \
        ("extra_paths", True)


def test_every_backend_option_offers_the_registered_backends():
    found = {path: p for path, c in ALL_COMMANDS for p in c.params if p.name == "backend"}
    assert set(found) == {("check",), ("build",)}
    for param in found.values():
        assert isinstance(param.type, click.Choice)
        assert tuple(param.type.choices) == backends.names()


def test_both_entry_points_are_the_same_command():
    scripts = {ep.name: ep for ep in
               importlib.metadata.distribution("trove-image-builder").entry_points
               if ep.group == "console_scripts"}
    assert sorted(scripts) == ["image-builder", "trove-image-builder"], \
        "installed metadata differs from setup.cfg: run scripts/install (pip install -e .)"
    assert all(ep.load() is main for ep in scripts.values())


@pytest.mark.parametrize("name", ["trove-image-builder", "image-builder"])
def test_the_installed_script_names_itself(name):
    """--version names the command as it was run (in a fresh process: click's
    version_option keeps the first name it saw in a process)."""
    script = Path(sys.executable).parent / name
    assert script.is_file(), f"{script} missing: run scripts/install (pip install -e .)"
    proc = subprocess.run([str(script), "--version"], capture_output=True, text=True,
                          timeout=60)
    assert (proc.returncode, proc.stdout) == (0, f"{name}, version {__version__}\n"), \
        proc.stderr
