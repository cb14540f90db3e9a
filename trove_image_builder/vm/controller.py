"""Trove's control plane for one guest, played here: the taskmanager's
prepare, the API's create_database and create_user, and the conductor that
hears the guest's heartbeats and notifications.

The messages are Trove 26.0.0's own, sent with its own client and
serializers; only what would read Trove's database is replaced:

- the taskmanager sends ``prepare`` (a cast, version 1.1, with
  ``ds_version``) through ``trove.guestagent.api.API`` as
  ``trove/taskmanager/models.py`` ``FreshInstanceTasks.create_instance`` and
  ``_guest_prepare`` do; ``config_contents`` is Trove's template for the
  datastore (``trove/common/template.py``, ``trove/templates/<manager>/``);
- the API sends ``create_database`` and ``create_user`` (casts, 1.0) and
  ``list_databases`` / ``list_users`` (calls, 1.0) as
  ``trove/extensions/common/service.py`` and ``models.py`` do;
- each request context carries the notification Trove's API puts there
  (``trove/common/notification.py``), which the guest's ``EndNotification``
  sends back to the conductor as ``notify_end`` or ``notify_exc_info``;
- the conductor serves ``trove/conductor/manager.py``'s methods on the
  ``conductor_queue`` topic; the guest encrypts what it sends with its
  ``instance_rpc_encr_key`` (``trove/common/rpc/conductor_guest_serializer.py``).

Nothing here needs a booted guest: the unit tests run it against a fake
agent on oslo.messaging's in-memory driver.
"""
import contextlib
from dataclasses import dataclass, field
import json
import logging
from pathlib import Path
import secrets
import string
import tempfile
import threading
import time
from types import SimpleNamespace
import warnings

from ..errors import HostError, InputError, TroveImageBuilderError, VerifyError
from . import secure_rpc
from .rabbit import client_config

with warnings.catch_warnings():
    # oslo.messaging and oslo.service warn that eventlet and their eventlet
    # helpers are deprecated; nothing here runs on eventlet
    warnings.simplefilter("ignore")
    from oslo_config import cfg as oslo_cfg
    import oslo_messaging as messaging
    from trove.common import cfg as trove_cfg
    from trove.common import context as trove_context
    from trove.common import exception as trove_exception
    from trove.common import notification
    from trove.common import template
    from trove.common.rpc import secure_serializer
    from trove.common.rpc import serializer as trove_serializer
    from trove.conductor import api as conductor_api
    from trove.extensions.common import common as api_common
    from trove.guestagent import api as guest_api

CONF = trove_cfg.CONF
HEALTHY = "healthy"
# trove/instance/service_status.py: the statuses that end a prepare badly
FAILED = ("failed to spawn", "guestagent error")
# Under TCG, a datastore's first start in its container takes minutes.
HEALTHY_DEADLINE = 900
STEP_DEADLINE = 300
NOTICE_GRACE = 30            # after a failed status, for the guest's notify_exc_info
CONTAINER = "database"       # trove/guestagent/utils/docker.py: the container's name
QUERY_CLIENTS = {"mariadb": "pymysql", "mysql": "pymysql", "postgresql": "psycopg2"}
SERVER = "trove-image-builder"


def _datastore_group(manager: str):
    """Trove's ``[<manager>]`` options (trove/common/cfg.py)."""
    try:
        group = CONF.get(manager or "")
    except oslo_cfg.NoSuchOptError:
        group = None
    if not hasattr(group, "tcp_ports"):
        raise InputError(f"Trove {_trove_version()} has no datastore manager '{manager}'")
    return group


def _trove_version() -> str:
    from importlib.metadata import version
    return version("trove")


def datastore_port(manager: str) -> int:
    """The datastore's client port: the first of Trove's ``[<manager>]
    tcp_ports``, the ports the agent publishes from its container."""
    ranges = _datastore_group(manager).tcp_ports
    return next(port for ports in ranges for port in ports)


def device_path(manager: str) -> str:
    """The volume's device in the guest: Trove's ``[<manager>] device_path``
    (the taskmanager sends it with prepare)."""
    return _datastore_group(manager).device_path


def mount_point(manager: str) -> str:
    """Where the agent mounts the volume: Trove's ``[<manager>] mount_point``
    (the taskmanager sends it with prepare)."""
    return _datastore_group(manager).mount_point


def agent_options(accelerator: str) -> dict:
    """[DEFAULT] options the injected trove-guestagent.conf needs for
    prepare on this host. Trove's agent waits state_change_wait_time (180 s
    by default) for the datastore's container to turn healthy; under TCG its
    first start takes longer, so the guest config, an operator's file, gives
    it the same time as our deadline."""
    if accelerator == "kvm":
        return {}
    return {"state_change_wait_time": str(HEALTHY_DEADLINE)}


def check_preparable(manager: str) -> None:
    """InputError unless Trove drives manager and the host can query it."""
    datastore_port(manager)
    if manager not in QUERY_CLIENTS:
        raise InputError(f"no query from the host for datastore manager '{manager}' "
                         f"(there is one for {', '.join(sorted(QUERY_CLIENTS))})")


# --------------------------------------------------------------------------
# Trove's configuration and the transport, for one run

def _conf_text(conductor_queue: str, manager: str | None, tls) -> str:
    lines = ["[DEFAULT]", "control_exchange = trove", f"conductor_queue = {conductor_queue}"]
    if manager:
        # the API's name checks read [<manager>] ignore_dbs / ignore_users
        lines.append(f"datastore_manager = {manager}")
    return "\n".join(lines) + "\n" + client_config(tls)


def _read_conf(text: str) -> None:
    with tempfile.TemporaryDirectory(prefix="tib-trove-conf-") as folder:
        path = Path(folder) / "trove.conf"
        path.write_text(text)
        CONF([], project="trove-image-builder", default_config_files=[str(path)],
             default_config_dirs=[])


@contextlib.contextmanager
def trove_rpc(url: str, tls=None, conductor_queue: str | None = None,
              manager: str | None = None):
    """Trove's global CONF set for this run (control exchange 'trove', the
    conductor's queue, the rabbit client's TLS) and an RPC transport on url.
    Afterwards CONF is read again without them: nothing lingers for the next
    run in this process. Yields the transport."""
    queue = conductor_queue or CONF.conductor_queue
    _read_conf(_conf_text(queue, manager, tls))
    # Without logging set up, Python prints warnings on stderr: Trove's
    # client logs each timed-out call (we poll) with its traceback, and py-amqp
    # warns of the broker's consumer cancel each time an RPC server stops.
    # (and a library may have given the root logger a handler: not to ours)
    quiet = logging.NullHandler()
    trove_log = logging.getLogger("trove")
    trove_log.addHandler(quiet)
    propagate, trove_log.propagate = trove_log.propagate, False
    logging.getLogger("amqp").addFilter(_not_cancel_notice)
    transport = None
    try:
        transport = messaging.get_rpc_transport(CONF, url=url)
        yield transport
    finally:
        if transport is not None:
            transport.cleanup()
        trove_log.removeHandler(quiet)
        trove_log.propagate = propagate
        logging.getLogger("amqp").removeFilter(_not_cancel_notice)
        _read_conf("")


def _not_cancel_notice(record: logging.LogRecord) -> bool:
    """False for py-amqp's notice of a basic.cancel (60, 30) on a closing channel."""
    return not (str(record.msg).startswith("Received method %s during closing channel")
                and bool(record.args) and record.args[0] == (60, 30))


# --------------------------------------------------------------------------
# The conductor

class ConductorSerializer(trove_serializer.TroveSerializer):
    """The conductor's side of the guest's encryption: what
    ``trove/common/rpc/conductor_host_serializer.py`` undoes, with the key
    given here where Trove reads it from its database. A context or an
    argument comes as ``{"context"|"entity": <encrypted>, "csz-instance-id":
    <guest id>}`` (an argument as that, in JSON); without a key, plain.
    Contexts stay dicts (Trove makes TroveContexts of them)."""

    def __init__(self, keys: dict):
        super().__init__(None)
        self._keys = keys

    def _deserialize_entity(self, ctxt, entity):
        try:
            wrapped = json.loads(entity)
            key = self._keys[wrapped["csz-instance-id"]]
            return json.loads(secure_rpc.decrypt(wrapped["entity"], key))
        except (ValueError, TypeError, KeyError):
            return entity       # plain, or not this guest's

    def _deserialize_context(self, ctxt):
        try:
            instance_id = ctxt["csz-instance-id"]
            found = json.loads(secure_rpc.decrypt(ctxt["context"], self._keys[instance_id]))
        except (ValueError, TypeError, KeyError):
            return ctxt
        found["instance_id"] = instance_id
        return found


@dataclass(frozen=True)
class Status:
    """A heartbeat: the service status the guest reported."""
    description: str
    at: float                  # time.monotonic() when heard
    sent: float | None = None  # the guest's own timestamp


@dataclass(frozen=True)
class Notice:
    """A notification the guest forwarded: the end of a request, or its
    failure with the guest's traceback."""
    kind: str                  # end | error
    event: str                 # the notification's class, e.g. DBaaSInstanceCreate
    request_id: str | None
    at: float
    message: str = ""
    exception: tuple = ()      # the guest's traceback, as lines

    @property
    def one_line(self) -> str:
        text = " ".join(self.message.split())
        return text if len(text) <= 300 else text[:297] + "..."


class PrepareError(VerifyError):
    """A prepare (or what follows it) failed; what the guest said is kept."""

    def __init__(self, message: str, statuses=(), notices=()):
        super().__init__(message)
        self.statuses = tuple(statuses)
        self.notices = tuple(notices)


class _Endpoint:
    """``trove/conductor/manager.py``'s methods, with their signatures: what
    the guest may call. Each records what it heard in the Conductor."""

    target = messaging.Target(version=conductor_api.API.API_LATEST_VERSION)

    def __init__(self, conductor: "Conductor"):
        self._conductor = conductor

    def heartbeat(self, context, instance_id, payload, sent=None):
        status = payload.get("service_status") if isinstance(payload, dict) else None
        if status is not None:
            self._conductor.heard(instance_id, "statuses",
                                  Status(status, time.monotonic(), sent))

    def update_backup(self, context, instance_id, backup_id, sent=None, **backup_fields):
        self._conductor.heard(instance_id, "backups", {"backup_id": backup_id, **backup_fields})

    def report_root(self, context, instance_id, user=None):
        self._conductor.heard(instance_id, "root_reports", time.monotonic())

    def notify_end(self, context, serialized_notification, notification_args):
        self._notice("end", serialized_notification)

    def notify_exc_info(self, context, serialized_notification, message, exception):
        self._notice("error", serialized_notification, message, exception)

    def _notice(self, kind, serialized, message="", exception=()):
        serialized = serialized if isinstance(serialized, dict) else {}
        event = str(serialized.get("notification_classname", "")).rpartition(".")[2]
        self._conductor.heard(serialized.get("instance_id"), "notices", Notice(
            kind, event, serialized.get("request_id"), time.monotonic(), str(message or ""),
            tuple(exception or ())))


class Conductor:
    """trove-conductor for one guest: an RPC server on the conductor's topic
    (as ``trove/cmd/conductor.py`` starts it) recording what the guest sends
    where Trove would write its database. A context manager."""

    def __init__(self, transport, guest_id: str, rpc_key: str | None,
                 conductor_queue: str | None = None):
        self.guest_id = guest_id
        self.statuses: list[Status] = []
        self.notices: list[Notice] = []
        self.root_reports: list[float] = []
        self.backups: list[dict] = []
        self._cond = threading.Condition()
        target = messaging.Target(topic=conductor_queue or CONF.conductor_queue,
                                  server=SERVER, version=_Endpoint.target.version)
        self._server = messaging.get_rpc_server(
            transport, target, [_Endpoint(self)],
            serializer=ConductorSerializer({guest_id: rpc_key}),
            access_policy=messaging.DefaultRPCAccessPolicy)

    def __enter__(self):
        self._server.start()
        return self

    def __exit__(self, *exc):
        self._server.stop()
        self._server.wait()
        return False

    def heard(self, instance_id, where: str, what) -> None:
        if instance_id != self.guest_id:
            return      # another guest's, or not decrypted: not ours
        with self._cond:
            getattr(self, where).append(what)
            if where == "statuses":
                # the server's threads may handle two heartbeats out of
                # order: the guest's timestamps say which came first (as
                # Trove's conductor reads them, _message_too_old)
                self.statuses.sort(key=lambda s: (s.sent is None, s.sent or 0, s.at))
            self._cond.notify_all()

    @property
    def last_status(self) -> str | None:
        return self.statuses[-1].description if self.statuses else None

    def errors(self, request_id: str | None = None) -> list[Notice]:
        return [n for n in self.notices if n.kind == "error"
                and (request_id is None or n.request_id == request_id)]

    def fail(self, summary: str, errors=None):
        """PrepareError: summary; the last status; the guest's notify_exc_info."""
        last = f"'{self.last_status}'" if self.statuses else "none"
        text = f"{summary}; the last status the guest reported: {last}"
        errors = self.errors() if errors is None else errors
        if errors:
            text += f"; notify_exc_info: {errors[-1].one_line}"
        raise PrepareError(text, self.statuses, self.notices)

    def wait_until_healthy(self, request_id: str, deadline: float, since: float) -> Status:
        """The first 'healthy' heartbeat heard after since. PrepareError once
        the guest reports a failed status or a notify_exc_info for the
        prepare (after waiting a little for the other: the guest sends
        both), or at deadline (time.monotonic())."""
        bad_since = None
        with self._cond:
            while True:
                heard = [s for s in self.statuses if s.at >= since]
                healthy = [s for s in heard if s.description == HEALTHY]
                if healthy:
                    return healthy[0]
                now = time.monotonic()
                errors = self.errors(request_id)
                failed = any(s.description in FAILED for s in heard)
                if (failed or errors) and bad_since is None:
                    bad_since = now
                if (failed and errors) or (bad_since is not None
                                           and now - bad_since >= NOTICE_GRACE):
                    self.fail("prepare failed", errors)
                if now >= deadline:
                    self.fail(f"no '{HEALTHY}' heartbeat within "
                              f"{deadline - since:.0f} s of prepare", errors)
                wake = deadline if bad_since is None else min(deadline, bad_since + NOTICE_GRACE)
                self._cond.wait(max(0.05, min(wake - now, 5)))


# --------------------------------------------------------------------------
# The taskmanager's and the API's side

class GuestClient(guest_api.API):
    """``trove.guestagent.api.API`` as Trove's taskmanager and API use it,
    on a transport and with an RPC key given here: Trove's ``get_client``
    takes the key from its database (``get_instance_encryption_key``) and the
    transport from the global ``trove.rpc.TRANSPORT``; this one makes the
    same client (``trove/rpc.py`` ``get_client``: Trove's SecureSerializer
    around its TroveRequestContextSerializer) from what it is given."""

    def __init__(self, context, guest_id: str, transport, rpc_key: str | None):
        self._transport = transport
        self._rpc_key = rpc_key
        super().__init__(context, guest_id)

    def _serializer(self, base=None):
        return secure_serializer.SecureSerializer(
            trove_serializer.TroveRequestContextSerializer(base), self._rpc_key)

    def get_client(self, target, version_cap, serializer=None):
        return messaging.get_rpc_client(self._transport, target, version_cap=version_cap,
                                        serializer=self._serializer(serializer))

    def _create_guest_queue(self):
        # As Trove's: an RPC server on the guest's topic, started and stopped,
        # so the queue exists before prepare is sent (the key from here, not
        # from DBInstance).
        target = messaging.Target(topic=self._get_routing_key(), server=self.id,
                                  version=self.API_BASE_VERSION)
        server = messaging.get_rpc_server(self._transport, target, [],
                                          serializer=self._serializer())
        server.start()
        server.stop()
        server.wait()


def _context(tenant_id: str, event=None, **payload):
    """A request context as Trove's API makes one, with the notification
    (trove/common/notification.py) its controller puts there, if any."""
    context = trove_context.TroveContext(user_id="trove-image-builder", project_id=tenant_id)
    if event is not None:
        context.notification = event(
            context, request_id=context.request_id, client_ip="127.0.0.1",
            server_ip="127.0.0.1", tenant_id=tenant_id, **payload)
    return context


def config_contents(manager: str, ds_version: str, ram_mb: int, instance_id: str,
                    datastore: str | None = None) -> str:
    """The datastore's configuration as the taskmanager renders it for
    prepare (trove/taskmanager/models.py ``_render_config``): Trove's
    SingleInstanceConfigTemplate for a datastore version and a flavor of
    ram_mb (the minimal objects it reads: Trove's come from its database and
    from Nova)."""
    version = SimpleNamespace(datastore_name=datastore or manager, manager=manager,
                              name=ds_version, version=ds_version)
    flavor = {"id": SERVER, "name": SERVER, "ram": ram_mb}
    return template.SingleInstanceConfigTemplate(version, flavor, instance_id).render()


class Taskmanager:
    """What trove-taskmanager and trove-api send to one guest."""

    def __init__(self, transport, guest_id: str, rpc_key: str | None,
                 tenant_id: str = SERVER):
        self.transport = transport
        self.guest_id = guest_id
        self.rpc_key = rpc_key
        self.tenant_id = tenant_id

    def client(self, context) -> GuestClient:
        return GuestClient(context, self.guest_id, self.transport, self.rpc_key)

    def prepare(self, manager: str, ds_version: str, memory_mb: int,
                datastore: str | None = None) -> str:
        """Cast prepare as create_instance does for a new instance without
        backup, configuration group, modules, initial databases or users;
        returns the request id (the guest's notifications carry it)."""
        context = _context(
            self.tenant_id, notification.DBaaSInstanceCreate, server_type="taskmanager",
            name=f"tib-{self.guest_id[:8]}", flavor_id=SERVER,
            datastore=datastore or manager, datastore_version=ds_version,
            image_id=None, availability_zone="nova", region_name="RegionOne",
            locality=None, instance_id=self.guest_id)
        group = _datastore_group(manager)
        root_password = None  # [<manager>] root_on_create is off by default
        self.client(context).prepare(
            memory_mb, "", [], [], device_path=group.device_path,
            mount_point=group.mount_point, backup_info=None,
            config_contents=config_contents(manager, ds_version, memory_mb, self.guest_id,
                                            datastore),
            root_password=root_password, overrides={}, cluster_config=None, snapshot=None,
            modules=[], ds_version=ds_version)
        return context.request_id

    def create_database(self, name: str) -> str:
        """POST /databases: the API's checks, then the cast."""
        context = _context(self.tenant_id, notification.DBaaSDatabaseCreate,
                           server_type="api", instance_id=self.guest_id, dbname=name)
        self.client(context).create_database(
            api_common.populate_validated_databases([{"name": name}]))
        return context.request_id

    def create_user(self, name: str, password: str, databases=()) -> str:
        """POST /users with access to databases."""
        context = _context(self.tenant_id, notification.DBaaSUserCreate,
                           server_type="api", instance_id=self.guest_id, username=name)
        users = api_common.populate_users([{"name": name, "password": password,
                                            "databases": [{"name": d} for d in databases]}])
        self.client(context).create_user(users)
        return context.request_id

    def call(self, method: str, timeout: float = 60, **kwargs):
        """Call any agent method as Trove's API does (an RPC call, version
        1.0); GuestError or GuestTimeout as Trove's client raises them."""
        return self.client(_context(self.tenant_id))._call(method, timeout, "1.0", **kwargs)

    def list_databases(self) -> list[str]:
        schemas, _marker = self.client(_context(self.tenant_id)).list_databases()
        return [s["_name"] for s in schemas]

    def list_users(self) -> list[str]:
        users, _marker = self.client(_context(self.tenant_id)).list_users()
        return [u["_name"] for u in users]


# --------------------------------------------------------------------------
# From the host, as the database's user

def query_from_host(manager: str, port: int, user: str, password: str, database: str,
                    host: str = "127.0.0.1", timeout: float = 15) -> str:
    """Create a table, write a row, read it back; return what was read."""
    note = f"written from the host {secrets.token_hex(4)}"
    if QUERY_CLIENTS.get(manager) == "pymysql":
        try:
            import pymysql
        except ImportError as exc:
            raise HostError("PyMySQL not found; install 'PyMySQL'") from exc
        conn = pymysql.connect(host=host, port=port, user=user, password=password,
                               database=database, connect_timeout=timeout)
    elif QUERY_CLIENTS.get(manager) == "psycopg2":
        try:
            import psycopg2
        except ImportError as exc:
            raise HostError("psycopg2 not found; install 'psycopg2-binary'") from exc
        conn = psycopg2.connect(host=host, port=port, user=user, password=password,
                                dbname=database, connect_timeout=int(timeout))
    else:
        raise InputError(f"no query from the host for datastore manager '{manager}'")
    try:
        with conn.cursor() as cur:
            cur.execute("CREATE TABLE IF NOT EXISTS tib_probe (note VARCHAR(64))")
            cur.execute("INSERT INTO tib_probe (note) VALUES (%s)", (note,))
            conn.commit()
            cur.execute("SELECT note FROM tib_probe WHERE note = %s", (note,))
            row = cur.fetchone()
    finally:
        conn.close()
    found = row[0] if row else None
    if found != note:
        raise VerifyError(f"the row written as {user} read back as {found!r}")
    return found


# --------------------------------------------------------------------------
# The whole exchange

@dataclass
class PrepareResult:
    prepare_to_healthy: float
    prepare_to_query: float
    healthy_at: float          # time.monotonic() when 'healthy' was heard
    database: str
    user: str
    statuses: list = field(default_factory=list)
    notices: list = field(default_factory=list)


def _password(length=24) -> str:
    return "".join(secrets.choice(string.ascii_letters + string.digits) for _ in range(length))


def _until(conductor: Conductor, what: str, probe, deadline: float, request_id=None,
           interval: float = 3):
    """Call probe until it returns a true value; PrepareError at the
    deadline naming the last failure, or at once if the guest reported an
    error for request_id."""
    last = "no answer"
    while True:
        errors = conductor.errors(request_id) if request_id else []
        if errors:
            conductor.fail(f"{what}: the guest failed", errors)
        try:
            found = probe()
            if found:
                return found
            last = "not there yet"
        except TroveImageBuilderError:
            raise
        except (trove_exception.TroveError, OSError) as exc:
            last = " ".join(str(exc).split()) or type(exc).__name__
        except Exception as exc:  # noqa: BLE001 - a client's error: report the last one
            last = f"{type(exc).__name__}: {' '.join(str(exc).split())}"
        if time.monotonic() >= deadline:
            conductor.fail(f"{what}: not done before the deadline ({last})", errors)
        time.sleep(interval)


def prove_prepare(url: str, guest_id: str, rpc_key: str | None, manager: str,
                  ds_version: str, forwarded: dict, *, memory_mb: int = 2048,
                  tenant_id: str = SERVER, tls=None, healthy_deadline: float = HEALTHY_DEADLINE,
                  step_deadline: float = STEP_DEADLINE, conductor_queue: str | None = None,
                  database: str = "tib_db", user: str = "tib_user",
                  host: str = "127.0.0.1") -> PrepareResult:
    """Play Trove for a booted guest whose agent listens on url: prepare,
    wait for 'healthy', create a database and a user with access to it
    (each confirmed by listing), then as that user, through forwarded (guest
    port -> port on host), write and read a row. Returns the seconds from
    prepare to healthy and to the row read back; PrepareError (one line:
    the last status, the guest's notify_exc_info) if a step fails or misses
    its deadline."""
    check_preparable(manager)
    port = datastore_port(manager)
    if port not in forwarded:
        raise VerifyError(f"the guest's port {port} ({manager}) is not forwarded to the host")
    password = _password()
    with trove_rpc(url, tls, conductor_queue, manager) as transport, \
            Conductor(transport, guest_id, rpc_key, conductor_queue) as conductor:
        tasks = Taskmanager(transport, guest_id, rpc_key, tenant_id)
        start = time.monotonic()
        request = tasks.prepare(manager, ds_version, memory_mb)
        conductor.wait_until_healthy(request, start + healthy_deadline, start)
        healthy_at = time.monotonic()
        healthy = healthy_at - start

        request = tasks.create_database(database)
        _until(conductor, f"create_database {database}",
               lambda: database in tasks.list_databases(),
               time.monotonic() + step_deadline, request)
        request = tasks.create_user(user, password, [database])
        _until(conductor, f"create_user {user}", lambda: user in tasks.list_users(),
               time.monotonic() + step_deadline, request)
        _until(conductor, f"a query as {user} from the host on {host}:{forwarded[port]}",
               lambda: query_from_host(manager, forwarded[port], user, password, database,
                                       host),
               time.monotonic() + step_deadline)
        answered = time.monotonic() - start
        return PrepareResult(round(healthy, 1), round(answered, 1), healthy_at, database, user,
                             list(conductor.statuses), list(conductor.notices))
