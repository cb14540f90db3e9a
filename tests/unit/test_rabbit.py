"""The Trove-style RPC client against oslo.messaging's in-memory 'fake://'
transport (an RPC server in a thread of this process plays the guest agent),
and LocalRabbit's checks before it starts anything. No RabbitMQ is started."""
import importlib.util
import uuid
import warnings

import pytest

oslo_messaging = pytest.importorskip("oslo_messaging")
from oslo_config import cfg  # noqa: E402

from trove_image_builder import host, rabbit  # noqa: E402
from trove_image_builder.errors import HostError, VerifyError  # noqa: E402

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


class _Conf(cfg.ConfigOpts):
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


@pytest.fixture
def agent():
    """An RPC server on fake:// for a new guest id, as Trove's agent listens:
    exchange 'trove', topic 'guestagent.<id>', server '<id>'."""
    conf = _Conf()
    conf([], project="trove-image-builder-tests")
    transport = oslo_messaging.get_rpc_transport(conf, url="fake://")
    guest_id = str(uuid.uuid4())
    target = oslo_messaging.Target(exchange="trove", topic=f"guestagent.{guest_id}",
                                   server=guest_id)
    endpoint = Agent()
    endpoint.guest_id = guest_id
    with warnings.catch_warnings():
        # newer oslo.messaging: threading is the default, naming it is deprecated
        warnings.simplefilter("ignore", DeprecationWarning)
        server = oslo_messaging.get_rpc_server(transport, target, [endpoint],
                                               executor="threading")
    server.start()
    try:
        yield endpoint
    finally:
        server.stop()
        server.wait()
        transport.cleanup()


def test_rpc_call_pings_the_agent(agent):
    assert rabbit.rpc_call("fake://", agent.guest_id, timeout=10) is True
    assert [name for name, _ in agent.calls] == ["rpc_ping"]


def test_rpc_call_other_method_with_arguments(agent):
    answer = rabbit.rpc_call("fake://", agent.guest_id, "get_hwinfo", timeout=10, flavor=3)
    assert answer == {"mem_total": 2048, "flavor": 3}
    assert agent.calls == [("get_hwinfo", {"flavor": 3})]


def test_rpc_call_to_another_guest_times_out(agent):
    with pytest.raises(oslo_messaging.MessagingTimeout, match=r"guestagent\.other"):
        rabbit.rpc_call("fake://", "other", timeout=0.5)
    assert agent.calls == []


def test_wait_for_rpc_answers(agent):
    answer, waited = rabbit.wait_for_rpc("fake://", agent.guest_id, 30)
    assert answer is True
    assert 0 <= waited < 30


def test_rpc_call_again_and_again(agent):
    """wait_for_rpc calls it in a loop: each call sets up its own transport."""
    assert [rabbit.rpc_call("fake://", agent.guest_id, timeout=10) for _ in range(3)] == \
        [True] * 3
    assert len(agent.calls) == 3


def test_wait_for_rpc_gives_up_with_the_last_failure(monkeypatch):
    def no_answer(url, guest_id, timeout):
        raise oslo_messaging.MessagingTimeout("No reply")
    monkeypatch.setattr(rabbit, "rpc_call", no_answer)
    with pytest.raises(VerifyError) as err:
        rabbit.wait_for_rpc("fake://", "g-1", 0.2)
    assert err.value.message == (
        "the guest agent did not answer rpc_ping on guestagent.g-1 within 0 s "
        "(timed out waiting for the agent's reply)")


def test_wait_for_rpc_retries_after_an_error(monkeypatch):
    answers = [ConnectionRefusedError("refused"), True]
    sleeps = []

    def call(url, guest_id, timeout):
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer
    monkeypatch.setattr(rabbit, "rpc_call", call)
    monkeypatch.setattr(rabbit.time, "sleep", sleeps.append)
    answer, _ = rabbit.wait_for_rpc("fake://", "g-1", 60)
    assert answer is True
    assert sleeps == [5]


# --------------------------------------------------------------------------
# LocalRabbit

def test_local_rabbit_needs_rabbitmq_server(monkeypatch):
    seen = []

    def which(tool):
        seen.append(tool)
        return None
    monkeypatch.setattr(host, "which", which)
    with pytest.raises(HostError) as err:
        rabbit.LocalRabbit()
    assert err.value.message.startswith("rabbitmq-server not found")
    assert err.value.exit_code == 3
    assert seen == ["rabbitmq-server"]


def test_local_rabbit_settings_without_starting(monkeypatch):
    monkeypatch.setattr(host, "which", lambda tool: f"/opt/fake/{tool}")
    monkeypatch.setattr(rabbit, "_epmd_running", lambda: True)
    broker = rabbit.LocalRabbit()
    try:
        assert broker.proc is None
        assert broker.url == f"rabbit://guest:guest@127.0.0.1:{broker.port}/"
        env = broker.env
        assert env["RABBITMQ_NODE_IP_ADDRESS"] == "127.0.0.1"
        assert env["ERL_EPMD_ADDRESS"] == "127.0.0.1"
        assert env["RABBITMQ_NODE_PORT"] == str(broker.port)
        assert env["RABBITMQ_DIST_PORT"] == str(broker.dist_port)
        assert env["HOME"] == str(broker.home)
        assert env["RABBITMQ_NODENAME"] == broker.node
        assert broker.node.startswith("tib") and broker.node.endswith("@localhost")
        assert broker.port != broker.dist_port
        assert broker.home.is_dir()
    finally:
        broker.__exit__(None, None, None)
    assert not broker.home.exists()
