"""The test controller (vm.controller) against a guest agent played with
Trove's own guest-side code (tests/helpers/trove_guest.py), on
oslo.messaging's in-memory 'fake://' driver: the conductor hears what
Trove's guest sends, the messages sent are Trove's (methods, versions,
arguments, encrypted with the instance's key), and a failed prepare ends in
one line. No VM, no RabbitMQ, no database server."""
import json
from pathlib import Path
import time

import pytest

oslo_messaging = pytest.importorskip("oslo_messaging")

from oslo_messaging._drivers import impl_fake  # noqa: E402

from tests.helpers.trove_guest import trove_guest  # noqa: E402
from trove_image_builder.errors import InputError, VerifyError  # noqa: E402
from trove_image_builder.vm import controller, secure_rpc  # noqa: E402

KEY = "bzH6y0SGmjuoY0FNSTptrhgieGXNDX6P"


@pytest.fixture
def wire(monkeypatch):
    """Every message the fake driver sends: (target, context, message) as
    they travel, after the serializers."""
    sent = []
    real = impl_fake.FakeDriver._send

    def spy(self, target, ctxt, message, *args, **kwargs):
        sent.append((target, ctxt, message))
        return real(self, target, ctxt, message, *args, **kwargs)
    monkeypatch.setattr(impl_fake.FakeDriver, "_send", spy)
    return sent


@pytest.fixture
def guest():
    with trove_guest(rpc_key=KEY) as agent:
        yield agent


@pytest.fixture
def run(guest):
    """The controller's transport, conductor and taskmanager for guest."""
    with controller.trove_rpc("fake://", conductor_queue=guest.conductor_queue,
                              manager="mariadb") as transport, \
            controller.Conductor(transport, guest.guest_id, KEY,
                                 guest.conductor_queue) as conductor:
        yield conductor, controller.Taskmanager(transport, guest.guest_id, KEY)


def wait_for(predicate, seconds=10):
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, "not heard in time"
        time.sleep(0.02)


def decrypted(blob):
    return json.loads(secure_rpc.decrypt(blob, KEY))


def sent_to(wire, method):
    return [(target, ctxt, message) for target, ctxt, message in wire
            if message.get("method") == method]


# --------------------------------------------------------------------------
# the conductor

def test_conductor_records_the_guests_heartbeats_in_order(guest, run, wire):
    conductor, _ = run
    for status in ("building", "running", "healthy"):
        guest._status(status)       # what BaseDbStatus.set_status casts
    wait_for(lambda: len(conductor.statuses) == 3)
    assert [s.description for s in conductor.statuses] == ["building", "running", "healthy"]
    assert conductor.last_status == "healthy"
    assert all(s.sent for s in conductor.statuses)
    # Trove's guest encrypted them (ConductorGuestSerializer): nothing in clear
    (target, ctxt, message), *_ = sent_to(wire, "heartbeat")
    assert (target.topic, target.server, message["version"]) == \
        (guest.conductor_queue, None, "1.0")
    assert ctxt["csz-instance-id"] == guest.guest_id
    payload = json.loads(message["args"]["payload"])
    assert payload["csz-instance-id"] == guest.guest_id
    assert decrypted(payload["entity"]) == {"service_status": "building"}
    assert "building" not in json.dumps(message)


def test_conductor_ignores_another_guest(guest, run):
    conductor, _ = run
    controller.CONF.set_override("guest_id", "another-guest")
    try:
        guest._status("healthy")
    finally:
        controller.CONF.set_override("guest_id", guest.guest_id)
    guest._status("building")
    wait_for(lambda: conductor.statuses)
    time.sleep(0.2)
    assert [s.description for s in conductor.statuses] == ["building"]


def test_conductor_hears_a_guest_without_secure_rpc():
    with trove_guest(rpc_key=None) as agent, \
            controller.trove_rpc("fake://", conductor_queue=agent.conductor_queue) as t, \
            controller.Conductor(t, agent.guest_id, None, agent.conductor_queue) as conductor:
        agent._status("healthy")
        wait_for(lambda: conductor.statuses)
    assert conductor.last_status == "healthy"


# --------------------------------------------------------------------------
# what the taskmanager and the API send

def test_prepare_is_trove_s_cast_encrypted_with_the_instance_key(guest, run, wire):
    conductor, tasks = run
    request_id = tasks.prepare("mariadb", "11.8", 2048)
    wait_for(lambda: guest.calls)
    ((target, ctxt, message),) = sent_to(wire, "prepare")
    # trove/guestagent/api.py API.prepare: a cast at 1.1 to the guest's topic
    assert (target.topic, target.server) == (f"guestagent.{guest.guest_id}", None)
    assert (message["method"], message["version"]) == ("prepare", "1.1")
    config = controller.config_contents("mariadb", "11.8", 2048, guest.guest_id)
    expected = {"packages": "", "databases": [], "memory_mb": 2048, "users": [],
                "device_path": "/dev/vdb", "mount_point": "/var/lib/mysql",
                "backup_info": None, "config_contents": config, "root_password": None,
                "overrides": {}, "cluster_config": None, "snapshot": None, "modules": [],
                "ds_version": "11.8"}
    # every argument and the context encrypted with the key (SecureSerializer)
    assert set(message["args"]) == set(expected)
    assert {name: decrypted(blob) for name, blob in message["args"].items()} == expected
    assert list(ctxt) == ["context"]
    context = decrypted(ctxt["context"])
    assert context["request_id"] == request_id
    assert context["project_id"] == "trove-image-builder"
    note = context["trove_notification"]
    assert note["notification_classname"] == "trove.common.notification.DBaaSInstanceCreate"
    assert (note["server_type"], note["instance_id"], note["datastore_version"]) == \
        ("guest", guest.guest_id, "11.8")
    # Trove's agent-side serializer decrypted the same arguments
    assert guest.calls == [("prepare", expected)]
    assert guest.contexts[0].notification.request_id == request_id


def test_prepare_for_postgresql_mounts_where_trove_says(guest, run):
    _, tasks = run
    tasks.prepare("postgresql", "17", 4096)
    wait_for(lambda: guest.calls)
    args = guest.calls[0][1]
    assert (args["mount_point"], args["ds_version"], args["memory_mb"]) == \
        ("/var/lib/postgresql", "17", 4096)
    assert "shared_buffers = 1024MB" in args["config_contents"]


def test_create_database_and_user_then_list_them(guest, run, wire):
    conductor, tasks = run
    tasks.create_database("tib_db")
    wait_for(lambda: "tib_db" in tasks.list_databases())
    tasks.create_user("tib_user", "secret", ["tib_db"])
    wait_for(lambda: "tib_user" in tasks.list_users())
    versions = {m["method"]: m["version"] for _, _, m in wire if m.get("method")}
    assert {k: versions[k] for k in ("create_database", "create_user", "list_databases",
                                     "list_users")} == dict.fromkeys(
        ("create_database", "create_user", "list_databases", "list_users"), "1.0")
    # the API's models, serialized (trove/extensions/common/common.py)
    assert ("create_database", [{"_name": "tib_db", "_collate": None,
                                 "_character_set": None}]) in guest.calls
    ((_, users),) = [c for c in guest.calls if c[0] == "create_user"]
    assert users == [{"_name": "tib_user", "_password": "secret", "_host": "%",
                      "_databases": [{"_name": "tib_db", "_collate": None,
                                      "_character_set": None}],
                      "_is_root": False}]
    ((_, _, message),) = sent_to(wire, "create_user")
    assert "secret" not in json.dumps(message)
    # the guest's EndNotification came back to the conductor
    wait_for(lambda: len(conductor.notices) == 2)
    assert [(n.kind, n.event) for n in conductor.notices] == [
        ("end", "DBaaSDatabaseCreate"), ("end", "DBaaSUserCreate")]


def test_config_contents_is_trove_s_template_rendered():
    import jinja2
    import trove
    folder = Path(trove.__file__).parent / "templates" / "mariadb"
    raw = (folder / "config.template").read_text()
    ours = controller.config_contents("mariadb", "11.8", 2048, "i-1")
    theirs = jinja2.Template(raw).render(flavor={"ram": 2048}, server_id=0)
    assert [line for line in ours.splitlines() if not line.startswith("server_id")] == \
        [line for line in theirs.splitlines() if not line.startswith("server_id")]
    assert "innodb_buffer_pool_size = 600M" in ours.splitlines()


# --------------------------------------------------------------------------
# the whole exchange

def test_prove_prepare_times_healthy_and_the_query(guest, monkeypatch):
    queries = []

    def query(manager, port, user, password, database, host):
        queries.append((manager, port, user, database, host))
        return "row"
    monkeypatch.setattr(controller, "query_from_host", query)
    result = controller.prove_prepare("fake://", guest.guest_id, KEY, "mariadb", "11.8",
                                      {3306: 40306}, conductor_queue=guest.conductor_queue)
    assert 0 <= result.prepare_to_healthy <= result.prepare_to_query
    assert [s.description for s in result.statuses] == ["building", "healthy"]
    assert queries == [("mariadb", 40306, "tib_user", "tib_db", "127.0.0.1")]
    assert [name for name, _ in guest.calls][:2] == ["prepare", "create_database"]
    assert "create_user" in [name for name, _ in guest.calls]
    # nothing of this run left in Trove's configuration
    assert controller.CONF.control_exchange == "openstack"


def test_a_failed_prepare_is_one_line_naming_the_status(guest):
    guest.prepare_error = RuntimeError("Failed to start database: 404 Client Error: "
                                       "Not Found (\"No such image: mariadb:99.9\")")
    with pytest.raises(controller.PrepareError) as err:
        controller.prove_prepare("fake://", guest.guest_id, KEY, "mariadb", "99.9",
                                 {3306: 40306}, conductor_queue=guest.conductor_queue)
    assert err.value.message == (
        "prepare failed; the last status the guest reported: 'failed to spawn'; "
        "notify_exc_info: Failed to start database: 404 Client Error: Not Found "
        "(\"No such image: mariadb:99.9\")")
    assert "\n" not in err.value.message
    assert [s.description for s in err.value.statuses] == ["building", "failed to spawn"]
    (notice,) = [n for n in err.value.notices if n.kind == "error"]
    assert notice.event == "DBaaSInstanceCreate"
    assert notice.exception[0].startswith("Traceback")
    assert "RuntimeError" in notice.exception[-1]


def test_no_healthy_heartbeat_before_the_deadline(guest):
    guest.final_status = "running"
    with pytest.raises(controller.PrepareError) as err:
        controller.prove_prepare("fake://", guest.guest_id, KEY, "mariadb", "11.8",
                                 {3306: 40306}, conductor_queue=guest.conductor_queue,
                                 healthy_deadline=1)
    assert err.value.message == ("no 'healthy' heartbeat within 1 s of prepare; "
                                 "the last status the guest reported: 'running'")


def test_no_heartbeat_at_all(monkeypatch):
    with trove_guest(rpc_key=KEY) as agent:
        agent.prepare = lambda context, **kwargs: None     # an agent that never reports
        with pytest.raises(controller.PrepareError, match=(
                r"^no 'healthy' heartbeat within 1 s of prepare; "
                r"the last status the guest reported: none$")):
            controller.prove_prepare("fake://", agent.guest_id, KEY, "mariadb", "11.8",
                                     {3306: 1}, conductor_queue=agent.conductor_queue,
                                     healthy_deadline=1)


def test_prove_prepare_needs_the_datastore_port_forwarded(guest):
    with pytest.raises(VerifyError, match=r"the guest's port 5432 \(postgresql\) is not "
                                          r"forwarded to the host"):
        controller.prove_prepare("fake://", guest.guest_id, KEY, "postgresql", "17",
                                 {3306: 40306})


# --------------------------------------------------------------------------
# from Trove's configuration

@pytest.mark.parametrize("manager, port, mount", [
    ("mariadb", 3306, "/var/lib/mysql"), ("mysql", 3306, "/var/lib/mysql"),
    ("postgresql", 5432, "/var/lib/postgresql")])
def test_datastore_port_and_mount_point_from_trove(manager, port, mount):
    assert controller.datastore_port(manager) == port
    assert controller.mount_point(manager) == mount
    controller.check_preparable(manager)


def test_unknown_manager_and_one_without_a_query():
    with pytest.raises(InputError, match=r"^Trove .* has no datastore manager 'nosuch'$"):
        controller.datastore_port("nosuch")
    with pytest.raises(InputError) as err:
        controller.check_preparable("redis")
    assert err.value.message == ("no query from the host for datastore manager 'redis' "
                                 "(there is one for mariadb, mysql, postgresql)")


def test_trove_rpc_leaves_trove_s_configuration_as_it_was():
    before = controller.CONF.conductor_queue
    with controller.trove_rpc("fake://", conductor_queue="elsewhere", manager="postgresql"):
        assert controller.CONF.control_exchange == "trove"
        assert controller.CONF.conductor_queue == "elsewhere"
        assert controller.CONF.datastore_manager == "postgresql"
    assert controller.CONF.conductor_queue == before == "trove-conductor"
    assert controller.CONF.control_exchange == "openstack"
    assert controller.CONF.datastore_manager is None


def test_what_boot_injects_matches_the_trove_release():
    """contract.injected's tables, against the Trove the images target."""
    from trove.common import constants
    from trove_image_builder.contract import injected
    assert injected.REGISTRY_EXT == constants.REGISTRY_EXT_DEFAULTS
    for manager, strategy in injected.REPLICATION.items():
        group = controller.CONF.get(manager)
        assert strategy == f"{group.replication_namespace}.{group.replication_strategy}"


@pytest.mark.parametrize("name", ["conductor_queue", "", None])
def test_an_option_is_not_a_datastore_manager(name):
    with pytest.raises(InputError, match="has no datastore manager"):
        controller.datastore_port(name)
