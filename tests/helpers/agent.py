"""The guest agent's side of Trove's RPC, played by an oslo.messaging RPC
server in a thread of this process. Needs oslo.messaging: test modules call
pytest.importorskip("oslo_messaging") before importing this."""
import contextlib
import importlib
import importlib.util
import json
import uuid
import warnings

from oslo_config import cfg
import oslo_messaging

from trove_image_builder.vm import secure_rpc

# oslo.messaging registers these groups on the global cfg.CONF only, yet
# RPCClient.call and the RPC server read them from the ConfigOpts they are
# given: the agent's server here has a ConfigOpts of its own, with them.
GLOBAL_ONLY_GROUPS = [(module, group) for module, group in (
    ("oslo_messaging._metrics.client", "oslo_messaging_metrics"),
    ("oslo_messaging._tracing.client", "oslo_messaging_tracing"))
    if importlib.util.find_spec(module) is not None]


def register_global_only_opts(conf):
    for module, group in GLOBAL_ONLY_GROUPS:
        mod = importlib.import_module(module)
        conf.register_opts(getattr(mod, group), group=group)


class AgentConf(cfg.ConfigOpts):
    """A ConfigOpts with the options oslo.messaging registers only globally."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        register_global_only_opts(self)


class Agent:
    """The guest agent's side: what Trove's controller calls."""

    target = oslo_messaging.Target(version="1.0")

    def __init__(self):
        self.calls = []

    def rpc_ping(self, ctxt):
        self.calls.append(("rpc_ping", ctxt))
        return True

    def get_hwinfo(self, ctxt, **kwargs):
        self.calls.append(("get_hwinfo", kwargs))
        return {"mem_total": 2048, **kwargs}


class KeyedAgentSerializer(oslo_messaging.NoOpSerializer):
    """The agent's side of Trove's secure serializer, as the agent behaves
    (trove/common/rpc/secure_serializer.py): a context must come encrypted
    under 'context' (a plain one fails the call), what does not decrypt is
    taken as it is."""

    def __init__(self, key):
        self.key = key

    def serialize_entity(self, ctxt, entity):
        return secure_rpc.encrypt(json.dumps(entity), self.key)

    def deserialize_entity(self, ctxt, entity):
        try:
            return json.loads(secure_rpc.decrypt(entity, self.key))
        except (ValueError, TypeError):
            return entity

    def serialize_context(self, ctxt):
        return {"context": secure_rpc.encrypt(json.dumps(ctxt), self.key)}

    def deserialize_context(self, ctxt):
        return json.loads(secure_rpc.decrypt(ctxt["context"], self.key))


@contextlib.contextmanager
def serving_agent(url: str, config_files=(), rpc_key=None):
    """An RPC server for a new guest id, as Trove's agent listens: exchange
    'trove', topic 'guestagent.<id>', server '<id>'; with rpc_key, it
    speaks Trove's encrypted RPC. Yields its endpoint."""
    conf = AgentConf()
    conf([], project="trove-image-builder-tests", default_config_files=list(config_files))
    transport = oslo_messaging.get_rpc_transport(conf, url=url)
    guest_id = str(uuid.uuid4())
    target = oslo_messaging.Target(exchange="trove", topic=f"guestagent.{guest_id}",
                                   server=guest_id)
    endpoint = Agent()
    endpoint.guest_id = guest_id
    with warnings.catch_warnings():
        # newer oslo.messaging: threading is the default, naming it is deprecated
        warnings.simplefilter("ignore", DeprecationWarning)
        server = oslo_messaging.get_rpc_server(
            transport, target, [endpoint], executor="threading",
            serializer=KeyedAgentSerializer(rpc_key) if rpc_key else None)
    server.start()
    try:
        yield endpoint
    finally:
        server.stop()
        server.wait()
        transport.cleanup()
