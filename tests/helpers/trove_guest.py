"""The guest agent's side of prepare, played in this process with Trove's
own guest-side code: the agent's RPC server decrypts with Trove's
SecureSerializer around its TroveRequestContextSerializer (as
trove/cmd/guest.py's RpcService does), and reports to the conductor with
trove.conductor.api.API (the heartbeat of BaseDbStatus.set_status, the
notifications of EndNotification), which encrypts with Trove's
ConductorGuestSerializer. What the datastore would do is faked.

Trove's conductor client reads the global trove.rpc.TRANSPORT and CONF's
guest_id and instance_rpc_encr_key: trove_guest() sets them, and unsets
them afterwards."""
import contextlib
import time
import uuid

import oslo_messaging as messaging

from trove_image_builder.vm import controller

from trove import rpc as trove_rpc
from trove.common import context as trove_context
from trove.common.notification import EndNotification
from trove.common.rpc import secure_serializer
from trove.common.rpc import serializer as trove_serializer
from trove.conductor import api as conductor_api
from trove.guestagent import api as guest_api

CONF = controller.CONF


class FakeTroveAgent:
    """A datastore manager's RPC methods (trove/guestagent/datastore/
    manager.py), reporting as the real ones do."""

    target = messaging.Target(version=guest_api.API.API_LATEST_VERSION)

    def __init__(self, guest_id):
        self.guest_id = guest_id
        self.calls = []
        self.contexts = []
        self.databases = []
        self.users = []
        self.prepare_error = None      # raise this from prepare, as a failed docker run
        self.final_status = "healthy"

    def _status(self, description):
        # trove/guestagent/datastore/service.py BaseDbStatus.set_status
        conductor_api.API(trove_context.TroveContext()).heartbeat(
            CONF.guest_id, {"service_status": description}, sent=time.time())

    def prepare(self, context, packages, databases, memory_mb, users, device_path=None,
                mount_point=None, backup_info=None, config_contents=None, root_password=None,
                overrides=None, cluster_config=None, snapshot=None, modules=None,
                ds_version=None):
        self.calls.append(("prepare", dict(
            packages=packages, databases=databases, memory_mb=memory_mb, users=users,
            device_path=device_path, mount_point=mount_point, backup_info=backup_info,
            config_contents=config_contents, root_password=root_password,
            overrides=overrides, cluster_config=cluster_config, snapshot=snapshot,
            modules=modules, ds_version=ds_version)))
        self.contexts.append(context)
        with EndNotification(context, instance_id=CONF.guest_id):
            self._status("building")
            try:
                if self.prepare_error is not None:
                    raise self.prepare_error
            except Exception:
                self._status("failed to spawn")
                raise
            self._status(self.final_status)

    def create_database(self, context, databases):
        self.calls.append(("create_database", databases))
        with EndNotification(context):
            self.databases += [d["_name"] for d in databases]

    def list_databases(self, context, limit=None, marker=None, include_marker=False):
        self.calls.append(("list_databases", None))
        return [{"_name": name, "_collate": None, "_character_set": None}
                for name in self.databases], None

    def create_user(self, context, users):
        self.calls.append(("create_user", users))
        with EndNotification(context):
            self.users += [u["_name"] for u in users]

    def list_users(self, context, limit=None, marker=None, include_marker=False):
        self.calls.append(("list_users", None))
        return [{"_name": name, "_host": "%", "_databases": []} for name in self.users], None


@contextlib.contextmanager
def trove_guest(url="fake://", rpc_key=None, conductor_queue=None):
    """A FakeTroveAgent listening as the agent does (exchange 'trove',
    topic guestagent.<id>, server <id>) and Trove's conductor client set up
    for it. Yields the agent."""
    queue = conductor_queue or f"tib-conductor-{uuid.uuid4().hex[:8]}"
    guest_id = str(uuid.uuid4())
    agent = FakeTroveAgent(guest_id)
    agent.conductor_queue = queue
    agent.rpc_key = rpc_key
    with controller.trove_rpc(url, conductor_queue=queue) as transport:
        CONF.set_override("guest_id", guest_id)
        CONF.set_override("instance_rpc_encr_key", rpc_key)
        saved, trove_rpc.TRANSPORT = trove_rpc.TRANSPORT, transport
        target = messaging.Target(topic=f"guestagent.{guest_id}", server=guest_id)
        server = messaging.get_rpc_server(
            transport, target, [agent],
            serializer=secure_serializer.SecureSerializer(
                trove_serializer.TroveRequestContextSerializer(None), rpc_key),
            access_policy=messaging.DefaultRPCAccessPolicy)
        server.start()
        try:
            yield agent
        finally:
            server.stop()
            server.wait()
            trove_rpc.TRANSPORT = saved
            CONF.clear_override("guest_id")
            CONF.clear_override("instance_rpc_encr_key")
