"""The 'dev' commands: one-line errors and exit codes for bad states (no VM,
a VM that died, a tree that is not Trove's, bad arguments), and what they
print, with the library's seams faked; no VM is started."""
import json
import subprocess

import pytest

from tests.helpers.cli import assert_error, invoke as run
from tests.helpers.dev import make_state, sleeper
from trove_image_builder.vm.dev import machine


@pytest.fixture
def folder(tmp_path):
    return tmp_path / "vm"


@pytest.fixture
def live(folder):
    """A state whose 'qemu' runs (a sleeper carrying the overlay's path)."""
    folder.mkdir()
    with sleeper(folder / "overlay.qcow2") as proc:
        make_state(folder, qemu_pid=proc.pid).save()
        yield folder


def dev(folder, *args):
    return run("dev", "--state", str(folder), *args)


@pytest.mark.parametrize("args", [["status"], ["sync"], ["prepare"], ["rpc", "rpc_ping"],
                                  ["reset"], ["ssh"], ["logs"]])
def test_no_vm_up_is_one_line(folder, args):
    assert_error(dev(folder, *args),
                 f"no development VM is up ({folder / 'state.json'} not found); start one "
                 "with 'trove-image-builder dev up'", 2)


def test_the_state_folder_from_the_environment(folder):
    result = run("dev", "status", env={"TROVE_IMAGE_BUILDER_DEV_STATE": str(folder)})
    assert f"({folder / 'state.json'} not found)" in result.stderr


def test_a_vm_that_died(folder):
    folder.mkdir()
    (folder / "console.log").write_text("[  OK  ] Reached target Power-Off.\n")
    make_state(folder, qemu_pid=2 ** 22 + 1).save()
    result = dev(folder, "rpc", "rpc_ping")
    assert result.exit_code == 1
    assert result.stderr.splitlines() == [
        f"Error: the development VM (qemu pid {2 ** 22 + 1}) is not running any more; "
        "'trove-image-builder dev down' clears its state", "console:",
        "[  OK  ] Reached target Power-Off."]


def test_sync_of_a_tree_that_is_not_trove(live, tmp_path):
    (tmp_path / "nova").mkdir()
    assert_error(dev(live, "sync", "--trove-src", str(tmp_path / "nova")),
                 f"{tmp_path / 'nova'}: not a Trove source tree (expected setup.cfg naming "
                 "'trove' and trove/guestagent/)", 2)


def test_sync_without_a_tree(live):
    assert_error(dev(live, "sync"),
                 "no Trove tree to sync: give --trove-src PATH (or to 'dev up')", 2)


def test_rpc_with_a_bad_argument(live):
    assert_error(dev(live, "rpc", "list_databases", "limit"),
                 "'limit': arguments are key=value (a value in JSON, or a string)", 2)


def test_rpc_prints_the_answer_as_json(live, monkeypatch):
    from trove_image_builder.vm.dev import control
    asked = []

    def call(st, method, arguments, timeout):
        asked.append((method, arguments, timeout))
        return [[{"_name": "tib_db"}], None]
    monkeypatch.setattr(control, "call", call)
    result = dev(live, "rpc", "list_databases", "limit=10", "--timeout", "5")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == [[{"_name": "tib_db"}], None]
    assert asked == [("list_databases", {"limit": 10}, 5.0)]


def test_ssh_runs_the_command_in_the_guest_with_its_exit_code(live, monkeypatch):
    ran = []

    def fake_run(argv, **kwargs):
        ran.append(argv)
        return subprocess.CompletedProcess(argv, 3)
    monkeypatch.setattr(subprocess, "run", fake_run)
    result = dev(live, "ssh", "--", "sudo", "docker", "ps", "-a")
    assert result.exit_code == 3
    (argv,) = ran
    assert argv[:3] == ["ssh", "-i", str(live / "id_ed25519")]
    assert argv[-5:] == ["trove@127.0.0.1", "sudo", "docker", "ps", "-a"]


@pytest.mark.parametrize("args, command", [
    (["logs"], "sudo tail -n 100 /var/log/trove/trove-guestagent.log"),
    (["logs", "-f", "-n", "5"], "sudo tail -n 5 -F /var/log/trove/trove-guestagent.log"),
    (["logs", "--journal", "-f"],
     "sudo journalctl -u guest-agent.service --no-pager -n 100 -f"),
])
def test_logs(live, monkeypatch, args, command):
    ran = []
    monkeypatch.setattr(subprocess, "run",
                        lambda argv, **kw: ran.append(argv) or subprocess.CompletedProcess(
                            argv, 0))
    assert dev(live, *args).exit_code == 0
    assert ran[0][-1] == command


def test_down_with_nothing_up(folder):
    result = dev(folder, "down")
    assert result.exit_code == 0 and json.loads(result.stdout) == {"stopped": []}


def test_down_stops_the_vm(live):
    result = dev(live, "down")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["stopped"][0].startswith("qemu (pid ")
    assert not live.exists()


def test_up_with_an_image_without_a_manifest(folder, tmp_path):
    image = tmp_path / "dev.qcow2"
    image.write_bytes(b"")
    assert_error(dev(folder, "up", "--image", str(image)),
                 f"{image}: no manifest (dev.qcow2.manifest.json) next to it; name the "
                 "profile it was built from with --profile", 2)


def test_up_reuses_without_building(live, monkeypatch):
    monkeypatch.setattr(machine, "_reuse", lambda st, src: (st, {}))
    result = dev(live, "up", "--profile", "no-such-profile")
    assert result.exit_code == 0, result.output
    shown = json.loads(result.stdout)
    assert shown["state"] == str(live) and shown["forwards"] == {"3306": 40306}
    assert shown["ssh"].startswith("ssh -i ")


def test_up_with_a_tree_that_is_not_trove(folder, tmp_path):
    assert_error(dev(folder, "up", "--trove-src", str(tmp_path)),
                 f"{tmp_path}: not a Trove source tree (expected setup.cfg naming 'trove' "
                 "and trove/guestagent/)", 2)


def test_up_builds_the_profile_once_into_the_cache(folder, tmp_path, monkeypatch):
    from tests.helpers import manifests
    from trove_image_builder.build import stage
    tree = tmp_path / "trove"
    (tree / "trove" / "guestagent").mkdir(parents=True)
    (tree / "setup.cfg").write_text("[metadata]\nname = trove\n")
    monkeypatch.setenv("TROVE_IMAGE_BUILDER_CACHE", str(tmp_path / "cache"))
    built, booted = [], []

    def build(prof, output, extra_paths, backend):
        built.append((prof.name, prof.guest_agent.path, output))
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_bytes(b"")
        manifests.write(output, "dev-mariadb", sets=[f"trove_source={tree}"])
        return output, {}
    monkeypatch.setattr(stage, "build", build)

    def up(folder, image, expect, trove_src, save=False, resume=True):
        booted.append((image, expect.profile, trove_src))
        return make_state(folder, image=str(image), trove_src=trove_src), {"boot": 1.0}
    monkeypatch.setattr(machine, "up", up)
    for _ in range(2):
        result = dev(folder, "up", "--trove-src", str(tree))
        assert result.exit_code == 0, result.output
    (name, path, image), = built
    assert name == "dev-mariadb" and path == str(tree)
    assert image.parent == tmp_path / "cache" / "dev" / "images"
    assert image.name.startswith("dev-mariadb-") and image.suffix == ".qcow2"
    assert ":" not in image.name and len(image.stem) == len("dev-mariadb-") + 16
    assert booted == [(image, "dev-mariadb", str(tree))] * 2
    assert "is built" in result.stderr
