"""LocalRabbit with TLS, for real: a RabbitMQ that wants client
certificates, the guest agent played by an RPC server in a thread of this
process, and Trove's call to it, both sides over TLS."""
import socket
import time

import pytest

oslo_messaging = pytest.importorskip("oslo_messaging")

from tests import pki  # noqa: E402
from tests.helpers.agent import serving_agent  # noqa: E402
from trove_image_builder.vm import rabbit  # noqa: E402
from trove_image_builder.errors import VerifyError  # noqa: E402

pytestmark = pytest.mark.integration

REFUSAL_SECONDS = 10


class Certs:
    """A CA that signs the broker (for the names the guest may use), one
    that signs the clients, and a client certificate from a third CA."""

    def __init__(self, folder):
        broker_ca, client_ca = pki.make_ca("Broker CA"), pki.make_ca("Client CA")
        (folder / "broker-ca.crt").write_text(broker_ca.cert_pem)
        (folder / "client-ca.crt").write_text(client_ca.cert_pem)
        names = ("127.0.0.1", "10.0.2.100", "localhost")
        cert, key = pki.issue(broker_ca, "broker", server=True, sans=names).write(folder, "server")
        self.broker = rabbit.BrokerTLS(folder / "client-ca.crt", cert, key)
        self.controller = self._client(folder, client_ca, "controller")
        self.agent = self._client(folder, client_ca, "guest-agent")
        self.stranger = self._client(folder, pki.make_ca("Other CA"), "stranger")

    @staticmethod
    def _client(folder, ca, name) -> rabbit.ClientTLS:
        cert, key = pki.issue(ca, name).write(folder, name)
        return rabbit.ClientTLS(folder / "broker-ca.crt", cert, key)


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    return Certs(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def broker(certs):
    with rabbit.LocalRabbit(tls=certs.broker) as started:
        yield started


@pytest.fixture(scope="module")
def agent(broker, certs, tmp_path_factory):
    """The guest agent's RPC server, over TLS with its own certificate."""
    # the rabbit driver would retry a refused connection for ever
    rabbit.check_broker_tls("127.0.0.1", broker.port, certs.agent)
    config_file = tmp_path_factory.mktemp("agent") / "agent.conf"
    config_file.write_text(rabbit.client_config(certs.agent))
    with serving_agent(broker.url, [str(config_file)]) as endpoint:
        yield endpoint


def test_rpc_ping_over_tls(broker, agent, certs):
    before = len(agent.calls)
    assert rabbit.rpc_call(broker.url, agent.guest_id, timeout=20, tls=certs.controller) is True
    assert [name for name, _ in agent.calls[before:]] == ["rpc_ping"]


def test_wait_for_rpc_over_tls(broker, agent, certs):
    answer, waited = rabbit.wait_for_rpc(broker.url, agent.guest_id, 30, tls=certs.controller)
    assert answer is True
    assert 0 <= waited < 30


def test_client_from_another_ca_is_refused(broker, agent, certs):
    before = len(agent.calls)
    start = time.monotonic()
    with pytest.raises(VerifyError, match=r"127\.0\.0\.1:\d+ refused the TLS connection"):
        rabbit.rpc_call(broker.url, agent.guest_id, timeout=5, tls=certs.stranger)
    with pytest.raises(VerifyError, match="refused the TLS connection"):
        rabbit.wait_for_rpc(broker.url, agent.guest_id, 30, tls=certs.stranger)
    assert time.monotonic() - start < REFUSAL_SECONDS
    assert agent.calls[before:] == []


def test_no_plain_amqp(broker):
    """The port speaks TLS only: an AMQP header gets no AMQP answer."""
    with socket.create_connection(("127.0.0.1", broker.port), timeout=10) as sock:
        sock.sendall(b"AMQP\x00\x00\x09\x01")
        try:
            answer = sock.recv(8)
        except ConnectionResetError:
            answer = b""
    assert not answer.startswith((b"\x01", b"AMQP")), answer
