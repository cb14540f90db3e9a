"""The Trove-style RPC client against oslo.messaging's in-memory 'fake://'
transport (an RPC server in a thread of this process plays the guest agent),
LocalRabbit's checks before it starts anything, and the TLS settings of both
(a TLS server in a thread stands in for the broker). No RabbitMQ is started."""
import socket
import ssl
import threading

import pytest

oslo_messaging = pytest.importorskip("oslo_messaging")

from tests import pki  # noqa: E402
from tests.helpers.agent import serving_agent  # noqa: E402
from trove_image_builder.plumbing import host  # noqa: E402
from trove_image_builder.vm import rabbit  # noqa: E402
from trove_image_builder.errors import HostError, VerifyError  # noqa: E402


@pytest.fixture
def agent():
    """The agent on oslo.messaging's in-memory fake:// transport."""
    with serving_agent("fake://") as endpoint:
        yield endpoint


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
    def no_answer(url, guest_id, timeout, tls, rpc_key=None):
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

    def call(url, guest_id, timeout, tls, rpc_key=None):
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


def test_epmd_running_ignores_an_unreaped_one(tmp_path):
    def process(pid, stat):
        (tmp_path / str(pid)).mkdir()
        (tmp_path / str(pid) / "stat").write_text(stat)
    process(10, "10 (epmd) Z 1 10 10 0 -1")
    process(11, "11 (epmd (x)) S 1 11 11 0 -1")
    process(12, "12 (bash) S 1 12 12 0 -1")
    assert not rabbit._epmd_running(tmp_path)
    process(13, "13 (epmd) S 1 13 13 0 -1")
    assert rabbit._epmd_running(tmp_path)
    assert isinstance(rabbit._epmd_running(), bool)


# --------------------------------------------------------------------------
# TLS

def broker_tls(folder) -> rabbit.BrokerTLS:
    ca = pki.make_ca()
    (folder / "clients-ca.crt").write_text(ca.cert_pem)
    cert, key = pki.issue(ca, "broker", server=True, sans=("127.0.0.1",)).write(folder, "server")
    return rabbit.BrokerTLS(folder / "clients-ca.crt", cert, key)


def test_broker_config_plain():
    assert rabbit.broker_config(5672) == "loopback_users.guest = true\n"


def test_broker_config_tls(tmp_path):
    tls = broker_tls(tmp_path)
    assert rabbit.broker_config(5999, tls).splitlines() == [
        "loopback_users.guest = true",
        "listeners.tcp = none",
        "listeners.ssl.default = 127.0.0.1:5999",
        f"ssl_options.cacertfile = {tmp_path / 'clients-ca.crt'}",
        f"ssl_options.certfile = {tmp_path / 'server.crt'}",
        f"ssl_options.keyfile = {tmp_path / 'server.key'}",
        "ssl_options.verify = verify_peer",
        "ssl_options.fail_if_no_peer_cert = true"]


def test_local_rabbit_tls_settings_without_starting(monkeypatch, tmp_path):
    monkeypatch.setattr(host, "which", lambda tool: f"/opt/fake/{tool}")
    monkeypatch.setattr(rabbit, "_epmd_running", lambda: True)
    monkeypatch.setenv("RABBITMQ_NODE_PORT", "5672")
    tls = broker_tls(tmp_path)
    broker = rabbit.LocalRabbit(tls=tls)
    try:
        assert broker.tls == tls
        assert broker.url == f"rabbit://guest:guest@127.0.0.1:{broker.port}/"
        env = broker.env
        # a plain listener would come from these: rabbitmq.conf has the TLS one
        assert "RABBITMQ_NODE_PORT" not in env and "RABBITMQ_NODE_IP_ADDRESS" not in env
        assert env["RABBITMQ_DIST_PORT"] == str(broker.dist_port)
        assert env["ERL_EPMD_ADDRESS"] == "127.0.0.1"
    finally:
        broker.__exit__(None, None, None)


def test_local_rabbit_tls_files_must_exist(monkeypatch, tmp_path):
    monkeypatch.setattr(host, "which", lambda tool: f"/opt/fake/{tool}")
    tls = rabbit.BrokerTLS(tmp_path / "ca.crt", tmp_path / "server.crt", tmp_path / "server.key")
    with pytest.raises(HostError, match=r"broker TLS file\(s\) not found: .*ca\.crt"):
        rabbit.LocalRabbit(tls=tls)


class PKI:
    """A CA that signs the broker, one that signs the clients, one that
    signs nothing here; a client certificate and server certificates."""

    def __init__(self, folder):
        self.folder = folder
        self.broker_ca, self.client_ca = pki.make_ca("Broker CA"), pki.make_ca("Client CA")
        self.broker_ca_file = self._ca(self.broker_ca, "broker-ca")
        self.client_ca_file = self._ca(self.client_ca, "client-ca")
        self.other_ca_file = self._ca(pki.make_ca("Other CA"), "other-ca")
        cert, key = pki.issue(self.client_ca, "controller").write(folder, "client")
        self.client = rabbit.ClientTLS(self.broker_ca_file, cert, key)

    def _ca(self, ca, name):
        path = self.folder / f"{name}.crt"
        path.write_text(ca.cert_pem)
        return path

    def server(self, *sans):
        return pki.issue(self.broker_ca, "broker", server=True, sans=sans).write(
            self.folder, "server-" + "-".join(sans))


@pytest.fixture
def certs(tmp_path):
    return PKI(tmp_path)


def test_client_config_tls(certs):
    assert rabbit.client_config(certs.client).splitlines() == [
        "[oslo_messaging_rabbit]", "ssl = true",
        f"ssl_ca_file = {certs.broker_ca_file}",
        f"ssl_cert_file = {certs.client.cert}",
        f"ssl_key_file = {certs.client.key}"]


def test_client_config_plain():
    assert rabbit.client_config() == "[oslo_messaging_rabbit]\nssl = false\n"


def test_client_config_tls_files_must_exist(tmp_path):
    tls = rabbit.ClientTLS(tmp_path / "ca.crt", tmp_path / "c.crt", tmp_path / "c.key")
    with pytest.raises(HostError, match=r"client TLS file\(s\) not found"):
        rabbit.client_config(tls)


def test_rpc_call_tls_options_then_plain(certs, monkeypatch):
    """The rabbit driver reads its options from the config file rpc_call
    writes each time: TLS on with tls, and off again in the next call."""
    seen, checked = [], []

    class Stop(Exception):
        pass

    def transport_seen(conf, url):
        transport = real(conf, url=url)  # loads the rabbit driver, connects to nothing
        try:
            group = conf.oslo_messaging_rabbit
            seen.append((group.ssl, group.ssl_ca_file, group.ssl_cert_file, group.ssl_key_file))
        finally:
            transport.cleanup()
        raise Stop
    real = oslo_messaging.get_rpc_transport
    monkeypatch.setattr(oslo_messaging, "get_rpc_transport", transport_seen)
    monkeypatch.setattr(rabbit, "check_broker_tls",
                        lambda address, port, tls, timeout: checked.append((address, port, tls)))
    url = "rabbit://guest:guest@127.0.0.1:5999/"
    for tls in (certs.client, None):
        with pytest.raises(Stop):
            rabbit.rpc_call(url, "g-1", timeout=1, tls=tls)
    assert seen == [(True, str(certs.broker_ca_file), str(certs.client.cert),
                     str(certs.client.key)),
                    (False, "", "", "")]
    assert checked == [("127.0.0.1", 5999, certs.client)]


def test_rpc_call_stops_at_a_tls_refusal(certs, monkeypatch):
    def refused(address, port, tls, timeout):
        raise VerifyError("refused")

    def no_transport(conf, url):
        raise AssertionError("no transport after a refusal")
    monkeypatch.setattr(rabbit, "check_broker_tls", refused)
    monkeypatch.setattr(oslo_messaging, "get_rpc_transport", no_transport)
    with pytest.raises(VerifyError, match="refused"):
        rabbit.rpc_call("rabbit://guest:guest@127.0.0.1:5999/", "g-1", tls=certs.client)


def test_wait_for_rpc_passes_tls_and_stops_at_a_refusal(certs, monkeypatch):
    calls, sleeps = [], []

    def call(url, guest_id, timeout, tls, rpc_key=None):
        calls.append(tls)
        raise VerifyError("the broker refused the TLS connection")
    monkeypatch.setattr(rabbit, "rpc_call", call)
    monkeypatch.setattr(rabbit.time, "sleep", sleeps.append)
    with pytest.raises(VerifyError, match="refused the TLS connection"):
        rabbit.wait_for_rpc("rabbit://", "g-1", 60, tls=certs.client)
    assert calls == [certs.client]
    assert sleeps == []


class TLSServer:
    """Stands in for the broker on 127.0.0.1: one connection, a TLS
    handshake that wants a client certificate signed by client_ca, then an
    AMQP greeting (a method frame) if greet."""

    def __init__(self, cert, key, client_ca, greet=True):
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(cert, key)
        self.context.load_verify_locations(client_ca)
        self.context.verify_mode = ssl.CERT_REQUIRED
        self.greet = greet
        self.errors = []
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        conn, _ = self.sock.accept()
        conn.settimeout(10)
        try:
            with self.context.wrap_socket(conn, server_side=True) as tls:
                if tls.recv(8) == b"AMQP\x00\x00\x09\x01" and self.greet:
                    tls.sendall(b"\x01\x00\x00\x00\x00\x00\x00")
        except OSError as exc:
            self.errors.append(exc)
        finally:
            conn.close()

    def close(self):
        self.thread.join(10)
        self.sock.close()


@pytest.fixture
def tls_server(certs):
    servers = []

    def start(sans=("127.0.0.1", "10.0.2.100", "localhost"), greet=True):
        cert, key = certs.server(*sans)
        servers.append(TLSServer(cert, key, certs.client_ca_file, greet))
        return servers[-1]
    yield start
    for server in servers:
        server.close()


def test_check_broker_tls_accepted(certs, tls_server):
    server = tls_server()
    rabbit.check_broker_tls("127.0.0.1", server.port, certs.client)
    server.close()
    assert server.errors == []


def test_check_broker_tls_checks_the_address(certs, tls_server):
    """As the rabbit driver does when ssl_ca_file is set: the broker's
    certificate must name the address connected to."""
    server = tls_server(sans=("10.0.2.100",))
    with pytest.raises(VerifyError, match=r"127\.0\.0\.1:\d+: its certificate is not trusted: "
                                          r"IP address mismatch"):
        rabbit.check_broker_tls("127.0.0.1", server.port, certs.client)


def test_check_broker_tls_broker_from_another_ca(certs, tls_server):
    server = tls_server()
    tls = rabbit.ClientTLS(certs.other_ca_file, certs.client.cert, certs.client.key)
    with pytest.raises(VerifyError, match="its certificate is not trusted"):
        rabbit.check_broker_tls("127.0.0.1", server.port, tls)


def test_check_broker_tls_client_from_another_ca(certs, tls_server, tmp_path):
    server = tls_server()
    cert, key = pki.issue(pki.make_ca("Other CA"), "stranger").write(tmp_path, "stranger")
    tls = rabbit.ClientTLS(certs.broker_ca_file, cert, key)
    # the alert (unknown CA) may be lost when the server closes first
    with pytest.raises(VerifyError, match=r"127\.0\.0\.1:\d+ refused the TLS connection"):
        rabbit.check_broker_tls("127.0.0.1", server.port, tls)


def test_check_broker_tls_needs_the_greeting(certs, tls_server):
    server = tls_server(greet=False)
    with pytest.raises(VerifyError, match="refused the TLS connection: closed without an AMQP "
                                          "greeting"):
        rabbit.check_broker_tls("127.0.0.1", server.port, certs.client)


def test_check_broker_tls_unreachable_is_worth_another_try(certs):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(OSError) as err:
        rabbit.check_broker_tls("127.0.0.1", port, certs.client)
    assert not isinstance(err.value, ssl.SSLError)


def test_check_broker_tls_unusable_key(certs):
    tls = rabbit.ClientTLS(certs.broker_ca_file, certs.client.cert, certs.broker_ca_file)
    with pytest.raises(HostError, match="cannot use the client TLS files"):
        rabbit.check_broker_tls("127.0.0.1", 1, tls)
