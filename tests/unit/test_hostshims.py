"""The kpartx, dmsetup and sudo stand-ins, run for real with fakes at the
seam: fake partx/mkdir/sleep/id programs first on PATH record what they were
asked to do. No device node is made and nothing under /dev is changed (the
only /dev paths touched are 'rm -f' of names that do not exist)."""
import os
from pathlib import Path
import shutil
import subprocess

import pytest

from trove_image_builder.plumbing import host

SHIMS = host.SHIMS_DIR
SHIM_NAMES = ("kpartx", "dmsetup", "sudo")

pytestmark = pytest.mark.skipif(not Path("/bin/bash").exists(), reason="no /bin/bash")

RECORDER = """#!/bin/bash
printf '%s\\n' "$(basename "$0") $*" >> "$FAKE_LOG"
"""

FAKES = {
    # partx: -a may fail (PARTX_ADD_RC); -g -o NR lists PARTX_NR.
    "partx": RECORDER + """
case "$*" in
    "-a "*) exit "${PARTX_ADD_RC:-0}" ;;
    "-g -o NR "*) [ -z "${PARTX_NR:-}" ] || printf '%s\\n' $PARTX_NR ;;
esac
exit 0
""",
    # mkdir and sleep only record: /dev stays as it is and waits take no time.
    "mkdir": RECORDER,
    "sleep": RECORDER,
    # id -u says what FAKE_UID says.
    "id": RECORDER + 'echo "${FAKE_UID:-0}"\n',
    # a command for sudo to run
    "recorder": RECORDER,
}


@pytest.fixture
def fakes(tmp_path):
    """run(shim, *args, **env) -> CompletedProcess, with the fakes first on PATH;
    .log() gives the recorded calls."""
    fakebin = tmp_path / "bin"
    fakebin.mkdir()
    for name, text in FAKES.items():
        path = fakebin / name
        path.write_text(text)
        path.chmod(0o755)
    log = tmp_path / "calls.log"
    log.write_text("")

    class Fakes:
        bin = fakebin

        @staticmethod
        def run(shim, *args, **extra_env):
            env = {"PATH": f"{fakebin}:{os.environ.get('PATH', '/usr/bin:/bin')}",
                   "FAKE_LOG": str(log), "HOME": str(tmp_path), "LC_ALL": "C"}
            env.update({k: str(v) for k, v in extra_env.items()})
            return subprocess.run([str(SHIMS / shim), *args], env=env, text=True,
                                  capture_output=True, timeout=30)

        @staticmethod
        def log():
            return log.read_text().splitlines()

    return Fakes


@pytest.fixture
def loop_name():
    """A loop device name that does not exist on this host."""
    name = f"tib-unit-loop{os.getpid()}"
    assert not Path(f"/dev/{name}").exists()
    assert not list(Path("/dev/mapper").glob(f"{name}*"))
    return name


# --------------------------------------------------------------------------
# The files themselves

@pytest.mark.parametrize("name", SHIM_NAMES)
def test_shim_is_an_executable_strict_bash_script(name):
    path = SHIMS / name
    assert os.access(path, os.X_OK)
    text = path.read_text()
    assert text.startswith("#!/bin/bash\n")
    assert "\nset -eu\n" in text


@pytest.mark.skipif(shutil.which("bash") is None, reason="no bash")
@pytest.mark.parametrize("name", SHIM_NAMES)
def test_shim_parses_as_bash(name):
    proc = subprocess.run(["bash", "-n", str(SHIMS / name)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


# --------------------------------------------------------------------------
# sudo

def test_sudo_runs_the_command_keeping_the_environment(fakes):
    proc = fakes.run("sudo", "-E", "env", MARKER_FOR_TEST="kept")
    assert proc.returncode == 0, proc.stderr
    assert "MARKER_FOR_TEST=kept" in proc.stdout.splitlines()
    # PATH is kept too: that is what lets DIB find the stand-ins
    path_line = [ln for ln in proc.stdout.splitlines() if ln.startswith("PATH=")]
    assert path_line and path_line[0].startswith(f"PATH={fakes.bin}:")


@pytest.mark.parametrize("command, code", [("true", 0), ("false", 1)])
def test_sudo_n_passes_the_exit_code_through(fakes, command, code):
    proc = fakes.run("sudo", "-n", command)
    assert proc.returncode == code


@pytest.mark.parametrize("args", [
    ("recorder", "a", "-b", "--c"),
    ("-E", "recorder", "a", "-b", "--c"),
    ("-n", "-E", "recorder", "a", "-b", "--c"),
    ("-u", "root", "recorder", "a", "-b", "--c"),
    ("-g", "root", "-E", "recorder", "a", "-b", "--c"),
    ("--preserve-env=PATH,HOME", "recorder", "a", "-b", "--c"),
    ("--user=root", "-H", "recorder", "a", "-b", "--c"),
    ("-E", "--", "recorder", "a", "-b", "--c"),
])
def test_sudo_strips_its_own_options(fakes, args):
    proc = fakes.run("sudo", *args)
    assert proc.returncode == 0, proc.stderr
    assert fakes.log()[-1] == "recorder a -b --c"


def test_sudo_runs_a_command_whose_name_looks_like_an_option(fakes):
    # after '--' nothing is an option
    proc = fakes.run("sudo", "--", "recorder", "--", "-x")
    assert proc.returncode == 0, proc.stderr
    assert fakes.log()[-1] == "recorder -- -x"


def test_sudo_without_a_command_does_nothing(fakes):
    proc = fakes.run("sudo", "-E")
    assert proc.returncode == 0
    assert [c for c in fakes.log() if not c.startswith("id ")] == []


def test_sudo_refuses_when_not_root(fakes):
    proc = fakes.run("sudo", "recorder", "x", FAKE_UID=1000)
    assert proc.returncode == 1
    assert proc.stderr == "sudo (trove-image-builder stand-in): only for builds run as root\n"
    assert "recorder x" not in fakes.log()


def test_sudo_missing_command_fails(fakes):
    proc = fakes.run("sudo", "-E", "no-such-command-tib")
    assert proc.returncode == 127


# --------------------------------------------------------------------------
# dmsetup

@pytest.mark.parametrize("args", [("mknodes",), ("--noudevsync", "mknodes")])
def test_dmsetup_mknodes_succeeds(fakes, args):
    proc = fakes.run("dmsetup", *args)
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "", "")


@pytest.mark.parametrize("args, shown", [
    (("info",), "info"),
    (("--noudevsync", "table", "loop0p1"), "table loop0p1"),
    ((), ""),
])
def test_dmsetup_unsupported_subcommand(fakes, args, shown):
    proc = fakes.run("dmsetup", *args)
    assert proc.returncode == 1
    assert proc.stderr == (
        f"dmsetup (trove-image-builder stand-in): '{shown}' is not supported\n")


def test_dmsetup_remove_needs_a_name(fakes):
    proc = fakes.run("dmsetup", "--noudevsync", "remove")
    assert proc.returncode != 0
    assert "dmsetup remove needs a name" in proc.stderr


def test_dmsetup_remove_of_an_absent_mapping_succeeds(fakes, loop_name):
    proc = fakes.run("dmsetup", "remove", f"{loop_name}p1")
    assert proc.returncode == 0, proc.stderr


# --------------------------------------------------------------------------
# kpartx

def test_kpartx_needs_a_device(fakes):
    proc = fakes.run("kpartx", "-av")
    assert proc.returncode == 1
    assert proc.stderr == "kpartx (trove-image-builder stand-in): no device given\n"
    assert not [c for c in fakes.log() if c.startswith("partx")]


@pytest.mark.parametrize("flags", ["-av", "-uvs"])  # as DIB calls it
def test_kpartx_add_asks_partx(fakes, loop_name, flags):
    dev = f"/dev/{loop_name}"
    proc = fakes.run("kpartx", flags, dev, PARTX_NR="")
    assert proc.returncode == 0, proc.stderr
    assert fakes.log() == [f"partx -a {dev}", "mkdir -p /dev/mapper",
                           f"partx -g -o NR {dev}"]
    assert proc.stdout == ""


def test_kpartx_add_falls_back_to_update(fakes, loop_name):
    dev = f"/dev/{loop_name}"
    proc = fakes.run("kpartx", "-av", dev, PARTX_ADD_RC=1, PARTX_NR="")
    assert proc.returncode == 0, proc.stderr
    assert fakes.log()[:2] == [f"partx -a {dev}", f"partx -u {dev}"]


def test_kpartx_fails_when_a_partition_does_not_appear(fakes, loop_name):
    dev = f"/dev/{loop_name}"
    proc = fakes.run("kpartx", "-av", dev, PARTX_NR="1")
    assert proc.returncode == 1
    assert proc.stderr == (f"kpartx (trove-image-builder stand-in): "
                           f"/dev/{loop_name}p1 did not appear\n")
    # it waited (50 x 0.1 s) before giving up
    assert fakes.log().count("sleep 0.1") == 50


def test_kpartx_delete(fakes, loop_name):
    dev = f"/dev/{loop_name}"
    proc = fakes.run("kpartx", "-d", dev)
    assert proc.returncode == 0, proc.stderr
    assert fakes.log() == [f"partx -d {dev}"]


def test_kpartx_delete_ignores_a_partx_failure(fakes, tmp_path, loop_name):
    failing = fakes.bin / "partx"
    failing.write_text(FAKES["partx"].replace("exit 0\n", "exit 1\n"))
    proc = fakes.run("kpartx", "-dv", f"/dev/{loop_name}")
    assert proc.returncode == 0, proc.stderr
