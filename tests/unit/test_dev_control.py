"""Trove's side against the development VM (vm/dev/control.py): the
arguments of 'dev rpc', a call as Trove's API makes it (against Trove's own
guest-side code on oslo.messaging's fake:// driver), the reset commands sent
over ssh, the guards of 'dev prepare', and the background conductor's
journal."""
import shlex
import time

import pytest

oslo_messaging = pytest.importorskip("oslo_messaging")

from tests.helpers.dev import Done, FakeGuest, make_state  # noqa: E402
from tests.helpers.trove_guest import trove_guest  # noqa: E402
from trove_image_builder.errors import InputError, VerifyError  # noqa: E402
from trove_image_builder.vm import controller  # noqa: E402
from trove_image_builder.vm.dev import conductor, control, machine  # noqa: E402
from trove_image_builder.vm.dev import state as state_mod  # noqa: E402

KEY = "bzH6y0SGmjuoY0FNSTptrhgieGXNDX6P"


@pytest.fixture
def fake_guest(tmp_path, monkeypatch):
    fake = FakeGuest(tmp_path)
    monkeypatch.setattr(state_mod.DevState, "guest", lambda self: fake)
    monkeypatch.setattr(machine, "wait_for_agent", lambda st, title, deadline=0: 4.0)
    return fake


# --------------------------------------------------------------------------
# dev rpc

def test_arguments_are_json_or_strings():
    assert control.parse_arguments(["limit=10", "include_marker=true", "marker=null",
                                    "fs_path=/var/lib/mysql", "users=[{\"name\": \"a\"}]",
                                    "empty="]) == {
        "limit": 10, "include_marker": True, "marker": None, "fs_path": "/var/lib/mysql",
        "users": [{"name": "a"}], "empty": ""}


@pytest.mark.parametrize("bad", ["limit", "=3", "two words=1"])
def test_an_argument_without_a_key_is_one_line(bad):
    with pytest.raises(InputError) as err:
        control.parse_arguments([bad])
    assert err.value.message == f"{bad!r}: arguments are key=value (a value in JSON, or a " \
                                "string)"


@pytest.fixture
def guest_agent(tmp_path, monkeypatch):
    """Trove's guest-side code on fake://, and a state pointing at it."""
    monkeypatch.setattr(state_mod.DevState, "broker_url", property(lambda self: "fake://"))
    with trove_guest(rpc_key=KEY) as agent:
        agent.databases = ["tib_db"]
        yield agent, make_state(tmp_path, guest_id=agent.guest_id, rpc_key=KEY)


def test_call_asks_the_agent_as_trove_does(guest_agent):
    agent, st = guest_agent
    answer = control.call(st, "list_databases", {"limit": 5}, timeout=10)
    assert answer == [[{"_name": "tib_db", "_collate": None, "_character_set": None}], None]
    # Trove's client, decrypted by Trove's serializer on the guest's side
    assert [c[0] for c in agent.calls] == ["list_databases"]


def test_a_method_the_agent_lacks_is_one_line(guest_agent):
    _agent, st = guest_agent
    with pytest.raises(VerifyError, match=r"^the agent failed no_such_method: "):
        control.call(st, "no_such_method", {}, timeout=10)


def test_no_answer_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setattr(state_mod.DevState, "broker_url", property(lambda self: "fake://"))
    st = make_state(tmp_path, guest_id="nobody-listens")
    with pytest.raises(VerifyError) as err:
        control.call(st, "rpc_ping", {}, timeout=0.5)
    assert err.value.message == ("the agent did not answer rpc_ping within 0 s "
                                 "('dev logs' shows what it did)")


def test_a_method_name_is_checked():
    with pytest.raises(InputError, match="'rm -rf' is not a method name"):
        control.call(None, "rm -rf", {})


# --------------------------------------------------------------------------
# dev reset

def test_reset_commands_for_mariadb(tmp_path):
    assert control.reset_commands(make_state(tmp_path)) == [
        "docker rm -f database >/dev/null 2>&1 || true",
        "if mountpoint -q /var/lib/mysql; then umount /var/lib/mysql; fi",
        "sed -i '\\|^/dev/vdb[[:space:]]|d' /etc/fstab",
        "if [ -b /dev/vdb ]; then wipefs -a -q /dev/vdb; fi",
        "rm -f /opt/trove-guestagent/.guestagent.prepare.start "
        "/opt/trove-guestagent/.guestagent.prepare.end",
        "systemctl restart guest-agent.service"]


def test_reset_commands_for_postgresql_use_its_mount_point(tmp_path):
    commands = control.reset_commands(make_state(tmp_path, manager="postgresql"))
    assert "if mountpoint -q /var/lib/postgresql; then umount /var/lib/postgresql; fi" \
        in commands


def test_reset_of_an_image_without_a_preparable_datastore_leaves_the_volume(tmp_path):
    commands = control.reset_commands(make_state(tmp_path, preparable=False))
    assert not [c for c in commands if "vdb" in c or "mount" in c]


def test_reset_runs_them_as_root_in_one_ssh_and_marks_the_journal(tmp_path, fake_guest):
    st = make_state(tmp_path)
    state_mod.record_heard(tmp_path, {"kind": "status", "status": "healthy"})
    result = control.reset(st)
    (script,) = fake_guest.scripts
    assert script == "sudo sh -c " + shlex.quote("set -e; " + "; ".join(
        control.reset_commands(st)))
    assert result["seconds"]["first_answer"] == 4.0
    assert state_mod.last_heartbeat(tmp_path) is None


def test_a_failed_reset_is_one_line(tmp_path, fake_guest):
    fake_guest.answers.append(("sudo sh -c", Done(32, "", "umount: /var/lib/mysql: "
                                                          "target is busy.")))
    with pytest.raises(VerifyError) as err:
        control.reset(make_state(tmp_path))
    assert err.value.message == ("the reset failed in the guest (exit 32): umount: "
                                 "/var/lib/mysql: target is busy.")


# --------------------------------------------------------------------------
# dev prepare: the guards

def test_prepare_twice_asks_for_a_reset(tmp_path, fake_guest):
    fake_guest.answers.append(("test -e /opt/trove-guestagent/.guestagent.prepare.start -o "
                               "-e /opt/trove-guestagent/.guestagent.prepare.end", Done(0)))
    with pytest.raises(InputError) as err:
        control.prepare(make_state(tmp_path))
    assert err.value.message == ("the guest was prepared already; 'trove-image-builder dev "
                                 "reset' brings it back to never prepared")


def test_prepare_of_an_image_that_cannot_be(tmp_path, fake_guest):
    with pytest.raises(InputError, match="cannot be prepared as Trove does"):
        control.prepare(make_state(tmp_path, preparable=False))


def test_prepare_steps_the_conductor_aside_and_back(tmp_path, fake_guest, monkeypatch):
    fake_guest.answers.append(("test -e", Done(1)))
    events = []
    monkeypatch.setattr(machine, "stop_conductor", lambda st: events.append("stop"))
    monkeypatch.setattr(machine, "start_conductor", lambda st: events.append("start"))
    now = time.monotonic()

    def prove_prepare(url, guest_id, rpc_key, manager, version, forwarded, **kw):
        events.append(("prepare", manager, version, forwarded, kw["memory_mb"]))
        assert events[0] == "stop"
        return controller.PrepareResult(
            95.0, 120.0, now, "tib_db", "tib_user",
            [controller.Status("healthy", now - 1, 1.0)], [])
    monkeypatch.setattr(controller, "prove_prepare", prove_prepare)
    result = control.prepare(make_state(tmp_path))
    assert events == ["stop", ("prepare", "mariadb", "11.8", {3306: 40306}, 2048), "start"]
    assert result == {"prepare_to_healthy": 95.0, "prepare_to_query": 120.0,
                      "database": "tib_db", "user": "tib_user", "heartbeats": 1}
    assert state_mod.last_heartbeat(tmp_path)["status"] == "healthy"


def test_a_failed_prepare_brings_the_conductor_back_too(tmp_path, fake_guest, monkeypatch):
    fake_guest.answers.append(("test -e", Done(1)))
    events = []
    monkeypatch.setattr(machine, "stop_conductor", lambda st: events.append("stop"))
    monkeypatch.setattr(machine, "start_conductor", lambda st: events.append("start"))

    def prove_prepare(*args, **kwargs):
        raise controller.PrepareError("prepare failed; the last status the guest reported: "
                                      "'failed to spawn'",
                                      [controller.Status("failed to spawn", time.monotonic())])
    monkeypatch.setattr(controller, "prove_prepare", prove_prepare)
    with pytest.raises(VerifyError) as err:
        control.prepare(make_state(tmp_path))
    assert err.value.message.splitlines()[0] == (
        "prepare failed; the last status the guest reported: 'failed to spawn'")
    assert "docker logs --tail 30 database:" in err.value.message
    assert events == ["stop", "start"]
    assert state_mod.last_heartbeat(tmp_path)["status"] == "failed to spawn"


# --------------------------------------------------------------------------
# the background conductor

def test_the_conductor_writes_what_its_guest_says(tmp_path):
    with trove_guest(rpc_key=KEY) as agent:
        with controller.trove_rpc("fake://", conductor_queue=agent.conductor_queue) as \
                transport, conductor.RecordingConductor(tmp_path, transport, agent.guest_id,
                                                        KEY, agent.conductor_queue) as heard:
            for status in ("building", "healthy"):
                agent._status(status)
            deadline = time.monotonic() + 10
            while len(heard.statuses) < 2:
                assert time.monotonic() < deadline
                time.sleep(0.02)
    # written as heard (the server's threads may take them out of order)
    found = sorted(state_mod.heard(tmp_path), key=lambda e: e["sent"])
    assert [(e["kind"], e["status"]) for e in found] == [("status", "building"),
                                                         ("status", "healthy")]
    assert state_mod.last_heartbeat(tmp_path)["status"] == "healthy"
    assert all(e["sent"] and e["heard_at"] for e in found)
    assert state_mod.last_heartbeat(tmp_path)["heard"] == 2


def test_the_conductor_wants_its_folder(capsys):
    assert conductor.main([]) == 2
    assert "usage: python -m trove_image_builder.vm.dev.conductor STATE_FOLDER" in \
        capsys.readouterr().err


def test_trove_logs_nothing_through_the_roots_handler(guest_agent):
    """A library may give the root logger a handler (one did, on a real
    run): Trove's client's traceback of a failed call must not reach it,
    the one line is all the user sees."""
    import logging
    _agent, st = guest_agent
    seen = []

    class Keep(logging.Handler):
        def emit(self, record):
            seen.append(record.name)
    keep = Keep()
    logging.getLogger().addHandler(keep)
    try:
        with pytest.raises(VerifyError):
            control.call(st, "no_such_method", {}, timeout=10)
    finally:
        logging.getLogger().removeHandler(keep)
    assert not [name for name in seen if name.startswith("trove")]
