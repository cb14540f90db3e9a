"""The developer loop's state folder and process lifecycle (vm/dev/state.py,
machine.py), with stand-ins at the seams: no qemu, no RabbitMQ, no guest.
The stand-in processes are real (sleepers with the marker qemu and the
conductor carry), so 'detached', 'reused' and 'stopped' are real too."""
import json
import os
from pathlib import Path
import stat

import pytest

from tests.helpers import manifests
from tests.helpers.dev import make_state, sleeper, sleeper_argv, wait_for_exec
from trove_image_builder.errors import InputError, VerifyError
from trove_image_builder.plumbing import host
from trove_image_builder.vm import boot
from trove_image_builder.vm.boot import Guest
from trove_image_builder.vm.dev import machine, state as state_mod


# --------------------------------------------------------------------------
# the state folder

def test_state_round_trip(tmp_path):
    st = make_state(tmp_path, qemu_pid=123, conductor_pid=456, trove_src="/src/trove")
    st.save()
    again = state_mod.load(tmp_path)
    assert again == st
    assert again.forwarded == {3306: 40306}       # int keys back from JSON
    assert again.broker_url == "rabbit://guest:guest@127.0.0.1:45672/"
    assert again.key == tmp_path / "id_ed25519"
    # it holds the guest's RPC key
    assert stat.S_IMODE((tmp_path / "state.json").stat().st_mode) == 0o600
    assert not list(tmp_path.glob("*.partial"))


def test_state_ignores_keys_it_does_not_know(tmp_path):
    make_state(tmp_path).save()
    data = json.loads((tmp_path / "state.json").read_text())
    data["written_by_a_newer_version"] = 1
    (tmp_path / "state.json").write_text(json.dumps(data))
    assert state_mod.load(tmp_path).guest_id == make_state(tmp_path).guest_id


def test_no_state_is_one_line(tmp_path):
    with pytest.raises(InputError) as err:
        state_mod.load(tmp_path / "nothing")
    assert err.value.message == (
        f"no development VM is up ({tmp_path / 'nothing' / 'state.json'} not found); "
        "start one with 'trove-image-builder dev up'")


def test_a_broken_state_file_is_one_line(tmp_path):
    (tmp_path / "state.json").write_text("{not json")
    with pytest.raises(InputError, match="not a state file of 'dev up'"):
        state_mod.load(tmp_path)


def test_the_guest_reaches_the_vm_with_the_states_key(tmp_path):
    guest = make_state(tmp_path).guest()
    argv = guest.ssh_argv("uptime")
    assert argv[:5] == ["ssh", "-i", str(tmp_path / "id_ed25519"), "-p", "40022"]
    assert argv[-2:] == ["trove@127.0.0.1", "uptime"]
    assert guest.forwarded == {3306: 40306}


def test_alive_knows_its_own_processes_by_their_marker(tmp_path):
    with sleeper(tmp_path / "overlay.qcow2") as proc:
        assert state_mod.alive(proc.pid, str(tmp_path / "overlay.qcow2"))
        assert state_mod.alive(proc.pid)
        # a reused pid: another program
        assert not state_mod.alive(proc.pid, str(tmp_path / "other"))
    assert not state_mod.alive(proc.pid, str(tmp_path / "overlay.qcow2"))
    assert not state_mod.alive(None)


def test_a_vm_that_died_is_one_error_with_its_console(tmp_path):
    (tmp_path / "console.log").write_text("booting\nKernel panic - not syncing\n")
    (tmp_path / "qemu.err").write_text("qemu-system-x86_64: terminating on signal 9\n")
    st = make_state(tmp_path, qemu_pid=2 ** 22 + 1)
    with pytest.raises(VerifyError) as err:
        state_mod.require_running(st)
    first, *rest = err.value.message.splitlines()
    assert first == (f"the development VM (qemu pid {2 ** 22 + 1}) is not running any more; "
                     "'trove-image-builder dev down' clears its state; qemu said: "
                     "qemu-system-x86_64: terminating on signal 9")
    assert rest == ["console:", "booting", "Kernel panic - not syncing"]


def test_last_heartbeat_counts_from_the_last_reset(tmp_path):
    assert state_mod.last_heartbeat(tmp_path) is None
    for entry in ({"kind": "status", "status": "healthy", "heard_at": 100.0},
                  {"kind": "reset", "heard_at": 110.0}):
        state_mod.record_heard(tmp_path, entry)
    assert state_mod.last_heartbeat(tmp_path, now=120.0) is None
    for n, status in enumerate(("building", "running", "healthy")):
        state_mod.record_heard(tmp_path, {"kind": "status", "status": status,
                                          "heard_at": 130.0 + n})
    state_mod.record_heard(tmp_path, {"kind": "notice", "type": "end", "heard_at": 133.0})
    assert state_mod.last_heartbeat(tmp_path, now=142.0) == {
        "status": "healthy", "seconds_ago": 10.0, "heard": 3}
    # heard out of order: the guest's timestamps decide
    state_mod.record_heard(tmp_path, {"kind": "status", "status": "shutdown", "sent": 50.0,
                                      "heard_at": 135.0})
    assert state_mod.last_heartbeat(tmp_path, now=142.0)["status"] == "healthy"


# --------------------------------------------------------------------------
# up, reuse, down

class FakeBroker:
    started = []
    stopped = []

    def __init__(self, folder, port=None):
        self.port = port or 45999
        self.pid = None
        self.home = folder / "broker"

    def record(self):
        return {"pid": self.pid, "port": self.port, "dist_port": 1, "node": "n",
                "home": str(self.home), "epmd_was_running": True}

    def running(self):
        return True

    def stop(self):
        FakeBroker.stopped.append(self.port)


@pytest.fixture
def seams(tmp_path, monkeypatch):
    """up() with stand-ins: the broker, the machine's files, the waits; qemu
    and the conductor are sleepers carrying their markers."""
    calls = {"prepare_machine": [], "wait_for_rpc": 0}
    FakeBroker.started, FakeBroker.stopped = [], []
    monkeypatch.setattr(host, "accelerator", lambda: "tcg")
    monkeypatch.setattr(boot, "check_tools", lambda guest_forwards=(): None)

    def start_broker(folder, port=None):
        FakeBroker.started.append(port)
        return FakeBroker(folder, port)
    monkeypatch.setattr(machine, "_start_broker", start_broker)
    monkeypatch.setattr(machine, "_broker",
                        lambda st: FakeBroker(st.folder, st.broker["port"]) if st.broker
                        else None)

    def prepare_machine(work, image, user, files, guest_forwards=(), volume=None,
                        host_forwards=(), memory_mb=2048, accel=None):
        calls["prepare_machine"].append(dict(work=work, image=image, user=user, files=files,
                                             guest_forwards=guest_forwards,
                                             host_forwards=host_forwards, accel=accel))
        if calls.get("fail_boot"):
            raise VerifyError("no ssh login as trove within 900 s")
        guest = Guest(40022, user, work / "id_ed25519", work / "console.log", work, "iid",
                      accel, forwarded={p: 40000 + p for p in host_forwards},
                      memory_mb=memory_mb)
        return guest, sleeper_argv(work / "overlay.qcow2")
    monkeypatch.setattr(boot, "prepare_machine", prepare_machine)
    monkeypatch.setattr(boot, "wait_until_up", lambda guest, timeout=0: None)
    monkeypatch.setattr(machine, "conductor_argv", lambda folder: sleeper_argv(folder))

    def wait_for_agent(st, title, deadline=0):
        calls["wait_for_rpc"] += 1
        if calls.get("agent_silent"):
            raise VerifyError("the guest agent did not answer rpc_ping")
        return 12.5
    monkeypatch.setattr(machine, "wait_for_agent", wait_for_agent)
    yield calls


@pytest.fixture(scope="module")
def dev_expect():
    return manifests.contract("dev-mariadb", sets=["trove_source=/src/trove"])


def test_up_starts_broker_vm_and_conductor_detached_and_records_them(
        tmp_path, seams, dev_expect):
    folder = tmp_path / "vm"
    st, timings = machine.up(folder, tmp_path / "dev.qcow2", dev_expect, "/src/trove")
    try:
        (call,) = seams["prepare_machine"]
        # the guest reaches the broker through the guest forward; the
        # datastore's port is forwarded to the host for the prepare's query
        assert call["guest_forwards"] == ((5672, 45999),)
        assert call["host_forwards"] == (3306,)
        assert call["work"] == folder and call["accel"] == "tcg"
        # Trove's files, the agent waits as long as our prepare deadline under TCG
        conf = call["files"]["/etc/trove/conf.d/trove-guestagent.conf"]
        assert "transport_url = rabbit://guest:guest@10.0.2.100:5672/" in conf
        assert "state_change_wait_time = 900" in conf
        assert f"guest_id={st.guest_id}" in call["files"]["/etc/trove/conf.d/guest_info.conf"]

        saved = state_mod.load(folder)
        assert saved == st
        assert saved.forwarded == {3306: 43306} and saved.broker["port"] == 45999
        assert saved.trove_src == "/src/trove" and saved.preparable
        assert saved.agent_log == "/var/log/trove/trove-guestagent.log"
        # qemu and the conductor run in sessions of their own: they outlive us
        wait_for_exec(saved.qemu_pid, folder / "overlay.qcow2")
        wait_for_exec(saved.conductor_pid, folder)
        for pid in (saved.qemu_pid, saved.conductor_pid):
            assert state_mod.alive(pid) and os.getsid(pid) == pid
        assert state_mod.qemu_running(saved) and machine.conductor_running(saved)
        assert timings == {"boot": timings["boot"], "agent": 12.5}
    finally:
        machine.down(folder)


def test_a_second_up_reuses_what_runs(tmp_path, seams, dev_expect):
    folder = tmp_path / "vm"
    first, _ = machine.up(folder, tmp_path / "dev.qcow2", dev_expect)
    try:
        os.kill(first.conductor_pid, 9)       # the conductor died meanwhile
        os.waitpid(first.conductor_pid, 0)
        wait_for_exec(first.qemu_pid, folder / "overlay.qcow2")
        again, timings = machine.up(folder, None, None, "/elsewhere/trove")
        assert len(seams["prepare_machine"]) == 1 and timings == {}
        assert again.qemu_pid == first.qemu_pid
        assert again.conductor_pid != first.conductor_pid
        wait_for_exec(again.conductor_pid, folder)
        assert machine.conductor_running(again)
        assert state_mod.load(folder).trove_src == "/elsewhere/trove"
    finally:
        machine.down(folder)


def test_up_over_a_dead_vm_says_so(tmp_path, seams, dev_expect):
    folder = tmp_path / "vm"
    folder.mkdir()
    make_state(folder, qemu_pid=2 ** 22 + 1).save()
    with pytest.raises(VerifyError, match=r"is not running any more; 'trove-image-builder "
                                          r"dev down' clears its state"):
        machine.up(folder, tmp_path / "dev.qcow2", dev_expect)


def test_down_stops_everything_and_removes_the_folder(tmp_path, seams, dev_expect):
    folder = tmp_path / "vm"
    st, _ = machine.up(folder, tmp_path / "dev.qcow2", dev_expect)
    wait_for_exec(st.qemu_pid, folder / "overlay.qcow2")
    wait_for_exec(st.conductor_pid, folder)
    stopped = machine.down(folder)
    assert stopped == [f"conductor (pid {st.conductor_pid})", f"qemu (pid {st.qemu_pid})"]
    assert FakeBroker.stopped == [45999]
    assert not state_mod.alive(st.qemu_pid) and not state_mod.alive(st.conductor_pid)
    assert not folder.exists()
    assert machine.down(folder) == []


def test_a_failed_boot_stops_what_had_started(tmp_path, seams, dev_expect):
    seams["fail_boot"] = True
    folder = tmp_path / "vm"
    with pytest.raises(VerifyError, match="no ssh login"):
        machine.up(folder, tmp_path / "dev.qcow2", dev_expect)
    assert FakeBroker.stopped == [45999]
    assert not folder.exists()


def test_an_agent_that_does_not_answer_leaves_the_vm_up_to_look_into(
        tmp_path, seams, dev_expect):
    seams["agent_silent"] = True
    folder = tmp_path / "vm"
    try:
        with pytest.raises(VerifyError) as err:
            machine.up(folder, tmp_path / "dev.qcow2", dev_expect)
        assert err.value.message.splitlines()[-1] == (
            "the VM stays up to look into it ('dev logs', 'dev ssh'); 'dev down' stops it")
        st = state_mod.load(folder)
        wait_for_exec(st.qemu_pid, folder / "overlay.qcow2")
        assert state_mod.qemu_running(st)
    finally:
        machine.down(folder)


def test_up_without_an_image_or_a_vm(tmp_path):
    with pytest.raises(InputError, match="no image to boot"):
        machine.up(tmp_path / "vm")


def test_status_of_a_dead_vm(tmp_path, monkeypatch):
    (tmp_path / "console.log").write_text("login:\n")
    st = make_state(tmp_path, qemu_pid=2 ** 22 + 1)
    st.save()
    monkeypatch.setattr(machine, "_broker", lambda st: None)
    found = machine.status(tmp_path)
    assert found["vm"]["running"] is False and found["vm"]["console_tail"] == "login:"
    assert found["agent"] == {"answers": False,
                              "error": "the VM or the broker is not running"}
    assert found["vm"]["ssh"] == "127.0.0.1:40022"
    assert found["vm"]["forwards"] == {"3306": "127.0.0.1:40306"}


def test_trove_source_of_reads_the_images_manifest(tmp_path):
    image = tmp_path / "dev.qcow2"
    manifests.write(image, "dev-mariadb", sets=["trove_source=/src/trove"])
    assert machine.trove_source_of(image) == "/src/trove"
    manifests.write(image, "prod-mariadb")
    assert machine.trove_source_of(image) is None
    assert machine.trove_source_of(tmp_path / "none.qcow2") is None


def test_prod_and_dev_images_are_preparable(dev_expect):
    assert machine.preparable(dev_expect)
    assert not machine.preparable(manifests.contract("mariadb-package"))


def test_the_detached_qemu_writes_its_stderr_in_the_folder(tmp_path, monkeypatch):
    guest = Guest(1, "trove", tmp_path / "k", tmp_path / "c", tmp_path, "iid", "tcg")
    proc = boot.start_qemu(guest, ["sh", "-c", "echo bad option >&2; exit 1"], detached=True)
    assert proc.wait(timeout=10) == 1
    assert (tmp_path / "qemu.err").read_text() == "bad option\n"
    assert guest.proc is proc and guest.powered_on > 0


def test_conductor_argv_names_the_folder(tmp_path):
    argv = machine.conductor_argv(tmp_path)
    assert argv[1:3] == ["-m", "trove_image_builder.vm.dev.conductor"]
    assert argv[-1] == str(tmp_path) and Path(argv[0]).name.startswith("python")


def test_a_vm_that_never_answers_is_stopped_with_the_rest(
        tmp_path, seams, dev_expect, monkeypatch):
    started = []

    def never(guest, timeout=0):
        started.append(guest.proc)
        raise VerifyError("no ssh login as trove within 900 s")
    monkeypatch.setattr(boot, "wait_until_up", never)
    with pytest.raises(VerifyError, match="no ssh login"):
        machine.up(tmp_path / "vm", tmp_path / "dev.qcow2", dev_expect)
    (proc,) = started
    assert proc.poll() is not None
    assert FakeBroker.stopped == [45999] and not (tmp_path / "vm").exists()


@pytest.mark.parametrize("code, prepared", [(0, True), (1, False), (255, None)])
def test_status_of_a_running_vm_says_whether_it_was_prepared(
        tmp_path, monkeypatch, code, prepared):
    from tests.helpers.dev import Done, FakeGuest
    from trove_image_builder.vm import rabbit
    fake = FakeGuest(tmp_path, answers=[("test -e /opt/trove-guestagent/.guestagent."
                                         "prepare.start", Done(code))])
    monkeypatch.setattr(state_mod.DevState, "guest", lambda self: fake)
    monkeypatch.setattr(machine, "_broker", lambda st: FakeBroker(st.folder, 45672))
    monkeypatch.setattr(rabbit, "rpc_call", lambda *a, **kw: True)
    with sleeper(tmp_path / "overlay.qcow2") as proc:
        make_state(tmp_path, qemu_pid=proc.pid).save()
        found = machine.status(tmp_path)
    assert found["agent"]["answers"] is True
    assert found["prepared"] is prepared


def test_the_first_ping_waits_until_the_agent_consumes_its_queue(tmp_path, monkeypatch):
    """A ping sent before is dropped (no queue yet) or waits in the queue
    until it expires, and the next goes only after the call's timeout."""
    counts = [0, 0, 0, 1]
    asked = []
    monkeypatch.setattr(machine, "agent_consumers", lambda st: asked.append(1) or counts.pop(0))
    monkeypatch.setattr(machine.time, "sleep", lambda s: None)
    monkeypatch.setattr(state_mod, "qemu_running", lambda st: True)
    machine._until_the_agent_listens(make_state(tmp_path), 60)
    assert len(asked) == 4 and counts == []
    # a broker that cannot be asked: the pings say what is wrong
    monkeypatch.setattr(machine, "agent_consumers", lambda st: None)
    machine._until_the_agent_listens(make_state(tmp_path), 60)
    # a VM that died: no waiting either
    monkeypatch.setattr(machine, "agent_consumers", lambda st: 0)
    monkeypatch.setattr(state_mod, "qemu_running", lambda st: False)
    machine._until_the_agent_listens(make_state(tmp_path), 60)


def test_agent_consumers_asks_the_broker_for_the_agents_server_queue(tmp_path, monkeypatch):
    import amqp
    import amqp.protocol
    declared = []

    class Channel:
        def queue_declare(self, queue, passive=False):
            declared.append((queue, passive))
            if queue.endswith("missing"):
                raise amqp.exceptions.NotFound("no queue")
            return amqp.protocol.queue_declare_ok_t(queue, 0, 1)

    class Connection:
        def __init__(self, host, userid, password, connect_timeout):
            assert host == "127.0.0.1:45672" and userid == "guest"

        def connect(self):
            pass

        def channel(self):
            return Channel()

        def close(self):
            pass
    monkeypatch.setattr(amqp, "Connection", Connection)
    st = make_state(tmp_path)
    assert machine.agent_consumers(st) == 1
    assert declared == [(f"guestagent.{st.guest_id}.{st.guest_id}", True)]
    assert machine.agent_consumers(make_state(tmp_path, guest_id="missing")) == 0
