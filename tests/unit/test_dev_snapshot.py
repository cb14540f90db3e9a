"""Save the development VM and resume it (vm/dev/snapshot.py, and its use
in machine.up/down): the monitor's commands in order against a fake qemu
monitor, what the snapshot folder holds, when a snapshot can be resumed,
what 'dev down --keep-snapshot' keeps. No qemu runs."""
import json
import subprocess

import pytest

from tests.helpers.dev import FakeQMP, make_state, sleeper
from trove_image_builder.errors import InputError, VerifyError
from trove_image_builder.vm.dev import machine, snapshot, state as state_mod


@pytest.fixture
def vm(tmp_path):
    """A state folder as 'dev up --snapshot' leaves it, its qemu a sleeper
    and its monitor a FakeQMP whose migrate runs the exec: command."""
    image = tmp_path / "dev.qcow2"
    image.write_bytes(b"image")
    folder = tmp_path / "vm"
    folder.mkdir()
    for name, data in (("overlay.qcow2", b"overlay"), ("config-drive.iso", b"iso"),
                       ("id_ed25519", b"key"), ("id_ed25519.pub", b"pub")):
        (folder / name).write_bytes(data)
    with open(folder / "volume.raw", "wb") as fh:
        fh.truncate(1 << 30)                      # sparse, as qemu-img makes it
        fh.write(b"ext4")

    def migrate(arguments):
        uri = arguments["uri"]
        assert uri.startswith("exec:")
        subprocess.run(["sh", "-c", f"echo ram | {uri[len('exec:'):]}"], check=True)
    qmp = FakeQMP(folder / "qmp.sock",
                  answers={"query-migrate": [{"status": "active"}, {"status": "completed"}]},
                  on={"migrate": migrate})
    with sleeper(folder / "overlay.qcow2") as proc:
        st = make_state(folder, image=str(image), qemu_pid=proc.pid, conductor_pid=proc.pid)
        st.save()
        yield st, qmp
    qmp.close()


def test_save_pauses_migrates_copies_the_disks_and_lets_it_run_on(vm):
    st, qmp = vm
    result = snapshot.save(st)
    assert qmp.names() == ["qmp_capabilities", "stop", "migrate-set-parameters", "migrate",
                           "query-migrate", "query-migrate", "cont"]
    uri = dict(qmp.commands)["migrate"]["uri"]
    assert uri == f"exec:cat > {st.folder / 'snapshot.partial' / 'vm.state'}"
    saved = st.folder / "snapshot"
    assert sorted(p.name for p in saved.iterdir()) == [
        "config-drive.iso", "id_ed25519", "id_ed25519.pub", "overlay.qcow2", "state.json",
        "vm.state", "volume.raw"]
    assert (saved / "vm.state").read_text() == "ram\n"
    assert (saved / "overlay.qcow2").read_bytes() == b"overlay"
    # the volume's holes stay holes
    assert (saved / "volume.raw").stat().st_blocks * 512 < 1 << 20
    assert not (st.folder / "snapshot.partial").exists()
    record = snapshot.saved(st.folder)
    assert record["guest_id"] == st.guest_id and record["rpc_key"] == st.rpc_key
    assert not set(snapshot.RUN_FIELDS) & set(record)
    assert record["image_id"]["size"] == 5
    assert result["bytes"] > 0 and result["seconds"] >= 0


def test_a_failed_save_lets_the_vm_run_on_and_keeps_nothing(vm):
    st, qmp = vm
    qmp.answers["query-migrate"] = [{"status": "failed", "error-desc": "No space left"}]
    with pytest.raises(VerifyError) as err:
        snapshot.save(st)
    assert err.value.message == "saving the VM failed: No space left"
    assert qmp.names()[-1] == "cont"
    assert snapshot.saved(st.folder) is None
    assert not (st.folder / "snapshot.partial").exists()


def test_a_refused_command_is_one_line(vm):
    st, qmp = vm
    qmp.errors["migrate"] = "There's a migration process in progress"
    with pytest.raises(VerifyError, match="^qemu's monitor refused migrate: There's a "
                                          "migration process in progress$"):
        snapshot.save(st)
    assert qmp.names()[-1] == "cont"


def test_restore_brings_back_the_disks_and_the_saved_guest(vm):
    st, _ = vm
    snapshot.save(st)
    for name in ("overlay.qcow2", "volume.raw", "id_ed25519", "state.json"):
        (st.folder / name).unlink()
    again = snapshot.restore(st.folder)
    assert (st.folder / "overlay.qcow2").read_bytes() == b"overlay"
    assert (st.folder / "id_ed25519").read_bytes() == b"key"
    assert again.guest_id == st.guest_id and again.rpc_key == st.rpc_key
    assert again.folder == st.folder and again.image == st.image
    assert again.qemu_pid is None and again.ssh_port == 0 and again.broker is None


def test_when_a_snapshot_can_be_resumed(vm, tmp_path):
    st, _ = vm
    snapshot.save(st)
    record = snapshot.saved(st.folder)
    image = tmp_path / "dev.qcow2"
    assert snapshot.usable(record, None, "tcg") is None
    assert snapshot.usable(record, image, "tcg") is None
    assert snapshot.usable(record, tmp_path / "other.qcow2", "tcg") == (
        f"it runs {image}, not {tmp_path / 'other.qcow2'}")
    assert snapshot.usable(record, None, "kvm") == "it was saved under tcg, qemu runs kvm now"
    image.write_bytes(b"rebuilt")
    assert snapshot.usable(record, None, "tcg") == f"{image} changed since it was saved"
    image.unlink()
    assert snapshot.usable(record, None, "tcg") == f"{image} is gone"


def test_a_loaded_vm_that_was_saved_paused_is_let_run(tmp_path):
    qmp = FakeQMP(tmp_path / "qmp.sock", answers={"query-status": [
        {"status": "inmigrate"}, {"status": "inmigrate"}, {"status": "paused"},
        {"status": "running"}]})
    try:
        with sleeper() as proc:
            snapshot.run_when_loaded(tmp_path, proc)
        assert qmp.names() == ["qmp_capabilities", "query-status", "query-status",
                               "query-status", "cont", "query-status"]
    finally:
        qmp.close()


def test_qemu_that_exits_before_loading_says_so(tmp_path):
    (tmp_path / "qemu.err").write_text("qemu-system-x86_64: Unknown savevm section\n")
    proc = subprocess.Popen(["true"])
    proc.wait()
    with pytest.raises(VerifyError, match=r"^qemu did not start to load the saved VM \(exit "
                                          r"0\): qemu-system-x86_64: Unknown savevm section$"):
        snapshot.run_when_loaded(tmp_path, proc)


def test_the_monitor_socket_needs_a_short_path(tmp_path):
    deep = tmp_path / ("x" * 100)
    with pytest.raises(InputError, match="too long a path for qemu's monitor socket"):
        snapshot.qmp_argv(deep)
    assert snapshot.qmp_argv(tmp_path) == ["-qmp",
                                           f"unix:{tmp_path}/qmp.sock,server=on,wait=off"]


def test_incoming_argv_loads_the_state_file(tmp_path):
    assert snapshot.incoming_argv(tmp_path)[-2:] == [
        "-incoming", f"exec:cat {tmp_path}/snapshot/vm.state"]


def test_after_resume_sets_the_clock_and_drops_the_dead_broker_connections(tmp_path):
    script = snapshot.after_resume_commands(make_state(tmp_path), 1796644570.4)
    assert script == ("sudo date -u -s @$(cat /sys/class/rtc/rtc0/since_epoch 2>/dev/null "
                      "|| echo 1796644570) >/dev/null; "
                      "sudo ss -K dst 10.0.2.100 dport = 5672 >/dev/null || true")


# --------------------------------------------------------------------------
# up and down with a snapshot

def test_down_keeps_the_snapshot_when_asked(vm, monkeypatch):
    st, _ = vm
    snapshot.save(st)
    monkeypatch.setattr(machine, "_broker", lambda st: None)
    machine.down(st.folder, keep_snapshot=True)
    assert sorted(p.name for p in st.folder.iterdir()) == ["snapshot"]
    assert not state_mod.alive(st.qemu_pid, str(st.folder / "overlay.qcow2"))
    assert machine.existing(st.folder) is None and snapshot.saved(st.folder)
    machine.down(st.folder)
    assert not st.folder.exists()


def test_down_without_a_snapshot_to_keep_removes_the_folder(tmp_path, monkeypatch):
    folder = tmp_path / "vm"
    folder.mkdir()
    make_state(folder).save()
    monkeypatch.setattr(machine, "_broker", lambda st: None)
    machine.down(folder, keep_snapshot=True)
    assert not folder.exists()


@pytest.fixture
def kept(vm, monkeypatch):
    """A folder holding only a snapshot, on a host running TCG."""
    st, _ = vm
    snapshot.save(st)
    monkeypatch.setattr(machine, "_broker", lambda st: None)
    machine.down(st.folder, keep_snapshot=True)
    monkeypatch.setattr(machine.host, "accelerator", lambda: "tcg")
    return st


def test_up_resumes_a_kept_snapshot_instead_of_booting(kept, monkeypatch):
    resumed = []
    monkeypatch.setattr(machine, "_resume", lambda folder, src: resumed.append(
        (folder, src)) or (kept, {"resume": 9.0}))
    monkeypatch.setattr(machine, "_boot", lambda *a: pytest.fail("booted"))
    st, timings = machine.up(kept.folder, None, None, "/src/trove")
    assert resumed == [(kept.folder, "/src/trove")] and timings == {"resume": 9.0}


def test_up_boots_when_told_to_or_when_the_snapshot_does_not_fit(kept, monkeypatch,
                                                                 tmp_path, capsys):
    monkeypatch.setattr(machine, "_resume", lambda *a: pytest.fail("resumed"))
    assert not machine.resumable(kept.folder, tmp_path / "other.qcow2")
    assert capsys.readouterr().err == (
        f"the snapshot in {kept.folder / 'snapshot'} is not resumed: it runs "
        f"{tmp_path / 'dev.qcow2'}, not {tmp_path / 'other.qcow2'}\n")
    with pytest.raises(InputError, match="no image to boot"):
        machine.up(kept.folder, None, None, resume=False)


def test_cli_up_resumes_without_building_and_down_keeps_it(kept, monkeypatch):
    from tests.helpers.cli import invoke
    from trove_image_builder.build import stage
    monkeypatch.setattr(stage, "build", lambda *a: pytest.fail("built"))
    called = []

    def up(folder, image, expect, trove_src, save=False, resume=True):
        called.append((image, expect, save, resume))
        return make_state(folder), {"resume": 9.0}
    monkeypatch.setattr(machine, "up", up)
    result = invoke("dev", "--state", str(kept.folder), "up")
    assert result.exit_code == 0, result.output
    assert called == [(None, None, False, True)]
    assert json.loads(result.stdout)["seconds"] == {"resume": 9.0}

    downs = []
    monkeypatch.setattr(machine, "down", lambda folder, keep_snapshot=False: downs.append(
        keep_snapshot) or [])
    assert invoke("dev", "--state", str(kept.folder), "down", "--keep-snapshot").exit_code == 0
    assert invoke("dev", "--state", str(kept.folder), "down").exit_code == 0
    assert downs == [True, False]
