"""One command at work on the development VM at a time (state.locked): a
second one fails at once with one line naming the first; the lock goes with
its holder and is never held by the processes 'up' leaves running."""
import json
import os
import re
import subprocess

import pytest

from tests.helpers.cli import assert_error, invoke
from tests.helpers.dev import holding, make_state, sleeper, sleeper_argv
from trove_image_builder.errors import InputError
from trove_image_builder.vm.dev import state as state_mod
from trove_image_builder.vm.dev.state import locked


def test_a_second_command_fails_at_once_naming_the_first(tmp_path):
    folder = tmp_path / "vm"
    with holding(folder, "up") as holder:
        with pytest.raises(InputError) as err:
            with locked(folder, "sync"):
                pytest.fail("ran under another command's lock")
        assert re.sub(r"for \d+ s", "for N s", err.value.message) == (
            f"another 'dev up' (pid {holder.pid}, for N s) is at work on the development "
            f"VM in {folder}; wait for it to end, or stop it")
        assert len(err.value.message.splitlines()) == 1


def test_a_killed_holder_leaves_no_stale_lock(tmp_path):
    folder = tmp_path / "vm"
    folder.mkdir()
    with holding(folder, "prepare"):
        pass                                    # killed on the way out
    assert (folder / "lock").is_file()
    with locked(folder, "reset"):
        held = json.loads((folder / "lock").read_text())
        assert held["pid"] == os.getpid() and held["command"] == "reset"


def test_one_command_after_another(tmp_path):
    folder = tmp_path / "vm"
    folder.mkdir()
    for command in ("up", "sync", "sync", "down"):
        with locked(folder, command):
            assert json.loads((folder / "lock").read_text())["command"] == command


def test_the_processes_started_under_it_do_not_hold_it(tmp_path):
    """qemu, the broker and the conductor outlive 'dev up': they must not
    keep its lock (the file is opened close-on-exec)."""
    folder = tmp_path / "vm"
    with locked(folder, "up", create=True):
        (folder / "state.json").write_text("{}")
        child = subprocess.Popen(sleeper_argv(folder), start_new_session=True,
                                 close_fds=False)
    try:
        assert child.poll() is None
        with locked(folder, "sync"):
            pass
    finally:
        child.kill()
        child.wait()


def test_a_holder_that_has_not_written_its_name(tmp_path):
    import fcntl
    import sys
    folder = tmp_path / "vm"
    folder.mkdir()
    try_it = ("import sys\nfrom trove_image_builder.vm.dev.state import locked\n"
              "try:\n    with locked(sys.argv[1], 'sync'):\n        print('ran')\n"
              "except Exception as exc:\n    print(exc.message)\n")
    with open(folder / "lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)     # flock is per open file: another process
        said = subprocess.run([sys.executable, "-c", try_it, str(folder)],
                              capture_output=True, text=True, check=True).stdout
    assert said == (f"another 'dev' command is at work on the development VM in {folder}; "
                    "wait for it to end, or stop it\n")


def test_a_folder_made_only_for_the_lock_goes_with_it(tmp_path):
    folder = tmp_path / "vm"
    with locked(folder, "up", create=True):
        assert (folder / "lock").is_file()
    assert not folder.exists()          # e.g. 'dev up' whose build failed
    with locked(folder, "sync"):        # no folder: nothing to guard, none made
        assert not folder.exists()
    assert not folder.exists()


def test_a_folder_that_holds_a_vm_stays(tmp_path):
    folder = tmp_path / "vm"
    with locked(folder, "up", create=True):
        make_state(folder).save()
    assert (folder / "state.json").is_file()


# --------------------------------------------------------------------------
# the commands that take it

@pytest.fixture
def live(tmp_path):
    folder = tmp_path / "vm"
    folder.mkdir()
    with sleeper(folder / "overlay.qcow2") as proc:
        make_state(folder, qemu_pid=proc.pid).save()
        yield folder


@pytest.mark.parametrize("args", [["sync"], ["prepare"], ["reset"], ["down"],
                                  ["up", "--image", "/nonexistent.qcow2"]])
def test_commands_that_change_the_vm_wait_for_none(live, args):
    with holding(live, "up") as holder:
        result = invoke("dev", "--state", str(live), *args)
        result.stderr_bytes = re.sub(rb"for \d+ s", b"for N s", result.stderr_bytes)
        assert_error(result, f"another 'dev up' (pid {holder.pid}, for N s) is at work on "
                             f"the development VM in {live}; wait for it to end, or stop it",
                     2)
    assert state_mod.qemu_running(state_mod.load(live))        # down did nothing


def test_status_and_rpc_need_no_lock(live, monkeypatch):
    from trove_image_builder.vm.dev import control
    monkeypatch.setattr(control, "call", lambda st, method, arguments, timeout: True)
    with holding(live, "sync"):
        result = invoke("dev", "--state", str(live), "rpc", "rpc_ping")
        assert result.exit_code == 0, result.output
