"""A RabbitMQ of our own on 127.0.0.1, and a Trove-style RPC client.

Trove's controller talks to the guest agent over oslo.messaging; the first
thing it does with a new instance is an RPC call on the agent's topic
(``guestagent.<guest_id>``, server ``guest_id``), such as ``rpc_ping``.
Both sides can use TLS with client certificates (``BrokerTLS``,
``ClientTLS``).
"""
from dataclasses import dataclass
import os
from pathlib import Path
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
import uuid

from ..plumbing import host
from . import secure_rpc
from ..errors import HostError, TroveImageBuilderError, VerifyError

START_TIMEOUT = 120
# Debian's /usr/sbin wrappers switch to the rabbitmq user (another HOME,
# another Erlang cookie); the scripts behind them run as the caller.
_DEBIAN_BIN = Path("/usr/lib/rabbitmq/bin")
_AMQP_HEADER = b"AMQP\x00\x00\x09\x01"


@dataclass(frozen=True)
class TLSFiles:
    """One side's TLS files: the CA it trusts for the other side, and its
    own certificate and key."""

    ca: Path
    cert: Path
    key: Path


# The broker's CA signs the clients; a client's CA signed the broker.
BrokerTLS = ClientTLS = TLSFiles


def _tls_files(tls, who: str) -> tuple[Path, Path, Path]:
    """The absolute paths of tls's files; HostError if one is missing."""
    files = tuple(Path(path).resolve() for path in (tls.ca, tls.cert, tls.key))
    missing = [str(path) for path in files if not path.is_file()]
    if missing:
        raise HostError(f"{who} TLS file(s) not found: {', '.join(missing)}")
    return files


def _tool(name: str) -> str:
    direct = _DEBIAN_BIN / name
    return str(direct) if direct.exists() else (host.which(name) or name)


def _epmd_running(proc: Path = Path("/proc")) -> bool:
    """An epmd is alive. One that has exited but is not reaped yet does not
    count: taken for a running one, it would be left running after us."""
    for stat in proc.glob("[0-9]*/stat"):
        try:
            head, _, tail = stat.read_text().rpartition(")")
        except OSError:
            continue
        if head.partition("(")[2] == "epmd" and tail.split()[:1] not in (["Z"], ["X"]):
            return True
    return False


def broker_config(port: int, tls: BrokerTLS | None = None) -> str:
    """rabbitmq.conf for LocalRabbit. Without tls the plain AMQP listener
    comes from the environment; with it, only AMQPS on 127.0.0.1:port, and
    a client certificate signed by tls.ca is required."""
    lines = ["loopback_users.guest = true"]
    if tls is not None:
        ca, cert, key = _tls_files(tls, "broker")
        lines += ["listeners.tcp = none",
                  f"listeners.ssl.default = 127.0.0.1:{port}",
                  f"ssl_options.cacertfile = {ca}",
                  f"ssl_options.certfile = {cert}",
                  f"ssl_options.keyfile = {key}",
                  "ssl_options.verify = verify_peer",
                  "ssl_options.fail_if_no_peer_cert = true"]
    return "\n".join(lines) + "\n"


def _speaks_tls(sock: socket.socket) -> bool:
    """The peer answers a TLS handshake, with or without an alert (the
    broker wants a client certificate, which the probe has not)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        with context.wrap_socket(sock):
            return True
    except ssl.SSLError as exc:
        return "ALERT" in (exc.reason or "")


class LocalRabbit:
    """rabbitmq-server started as a plain process, on loopback only, with
    its own node name, ports and data folder; stopped on exit. With tls it
    serves AMQPS only, to clients with a certificate signed by tls.ca."""

    def __init__(self, tls: BrokerTLS | None = None, home: Path | None = None,
                 port: int | None = None):
        """home: the broker's folder, kept afterwards (default: a temporary
        one, removed on exit); port: its AMQP port (default: a free one)."""
        if host.which("rabbitmq-server") is None:
            raise HostError("rabbitmq-server not found; install 'rabbitmq-server' "
                            "(scripts/install test does)")
        if tls is not None:
            _tls_files(tls, "broker")
        self.tls = tls
        self.port = port or host.free_port()
        self.dist_port = host.free_port()
        self.node = f"tib{uuid.uuid4().hex[:8]}@localhost"
        self._own_home = home is None
        if home is None:
            self.home = Path(tempfile.mkdtemp(prefix="tib-rabbit-"))
        else:
            self.home = Path(home)
            self.home.mkdir(parents=True, exist_ok=True)
        self.proc = None
        self.pid = None
        self._epmd_was_running = _epmd_running()

    @property
    def env(self) -> dict:
        base = self.home
        env = dict(os.environ, HOME=str(base), RABBITMQ_NODENAME=self.node,
                   RABBITMQ_DIST_PORT=str(self.dist_port),
                   RABBITMQ_MNESIA_BASE=str(base / "mnesia"),
                   RABBITMQ_LOG_BASE=str(base / "log"),
                   RABBITMQ_PID_FILE=str(base / "rabbit.pid"),
                   RABBITMQ_ENABLED_PLUGINS_FILE=str(base / "enabled_plugins"),
                   RABBITMQ_CONFIG_FILE=str(base / "rabbitmq"),
                   ERL_EPMD_ADDRESS="127.0.0.1")
        if self.tls is None:
            # these make a plain listener; with TLS, rabbitmq.conf has the only one
            env.update(RABBITMQ_NODE_IP_ADDRESS="127.0.0.1", RABBITMQ_NODE_PORT=str(self.port))
        else:
            for name in ("RABBITMQ_NODE_IP_ADDRESS", "RABBITMQ_NODE_PORT"):
                env.pop(name, None)
        return env

    def _listening(self) -> bool:
        """The broker answers on its port (it listens once booted): to an
        AMQP header, or to a TLS handshake."""
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=2) as sock:
                if self.tls is not None:
                    return _speaks_tls(sock)
                sock.sendall(_AMQP_HEADER)
                return len(sock.recv(8)) > 0
        except OSError:
            return False

    @property
    def url(self) -> str:
        return f"rabbit://guest:guest@127.0.0.1:{self.port}/"

    def start(self) -> "LocalRabbit":
        """Start the broker (in a session of its own: it may outlive us) and
        wait until it listens."""
        (self.home / "enabled_plugins").write_text("[].\n")
        (self.home / "rabbitmq.conf").write_text(broker_config(self.port, self.tls))
        with open(self.home / "server.out", "w") as out:
            self.proc = subprocess.Popen([_tool("rabbitmq-server")], env=self.env,
                                         stdin=subprocess.DEVNULL, stdout=out,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        self.pid = self.proc.pid
        deadline = time.monotonic() + START_TIMEOUT
        while not self._listening():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                out = (self.home / "server.out").read_text(errors="replace")[-1500:]
                self.stop()
                raise VerifyError(f"RabbitMQ did not start on 127.0.0.1:{self.port}: {out}")
            time.sleep(1)
        return self

    def record(self) -> dict:
        """What another process needs to find and stop this broker."""
        return {"pid": self.pid, "port": self.port, "dist_port": self.dist_port,
                "node": self.node, "home": str(self.home),
                "epmd_was_running": self._epmd_was_running}

    @classmethod
    def restore(cls, record: dict) -> "LocalRabbit":
        """The broker another process started (record()), to reach or stop it."""
        broker = cls.__new__(cls)
        broker.tls = None
        broker.port, broker.dist_port = record["port"], record["dist_port"]
        broker.node, broker.home = record["node"], Path(record["home"])
        broker._own_home = False
        broker.proc, broker.pid = None, record["pid"]
        broker._epmd_was_running = record["epmd_was_running"]
        return broker

    def running(self) -> bool:
        return self.pid is not None and _alive(self.pid) and self._listening()

    def stop(self) -> None:
        """Stop the broker's process group (and the epmd it started); remove
        its folder if it was a temporary one."""
        if self.pid is not None and _alive(self.pid):
            os.killpg(self.pid, signal.SIGTERM)
            if not _wait_gone(self.pid, self.proc, 60):
                os.killpg(self.pid, signal.SIGKILL)
                _wait_gone(self.pid, self.proc, 10)
        if not self._epmd_was_running and _epmd_running():
            subprocess.run(["epmd", "-kill"], capture_output=True, env=self.env)
        if self._own_home:
            shutil.rmtree(self.home, ignore_errors=True)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
        return False


def _alive(pid: int) -> bool:
    """pid is a process that has not exited (a zombie has)."""
    try:
        head, _, tail = Path(f"/proc/{pid}/stat").read_text().rpartition(")")
    except OSError:
        return False
    return tail.split()[:1] not in (["Z"], ["X"])


def _wait_gone(pid: int, proc: subprocess.Popen | None, timeout: float) -> bool:
    """Wait until pid has exited (reaped, if it is our child)."""
    if proc is not None:
        try:
            proc.wait(timeout=timeout)
            return True
        except subprocess.TimeoutExpired:
            return False
    deadline = time.monotonic() + timeout
    while _alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True


def client_config(tls: ClientTLS | None = None) -> str:
    """The [oslo_messaging_rabbit] options of a client: TLS with tls's
    files, or TLS off."""
    lines = ["[oslo_messaging_rabbit]"]
    if tls is None:
        lines.append("ssl = false")
    else:
        # '$' starts a substitution in oslo.config values
        ca, cert, key = (str(path).replace("$", "$$") for path in _tls_files(tls, "client"))
        lines += ["ssl = true", f"ssl_ca_file = {ca}", f"ssl_cert_file = {cert}",
                  f"ssl_key_file = {key}"]
    return "\n".join(lines) + "\n"


def check_broker_tls(address: str, port: int, tls: ClientTLS, timeout: float = 10) -> None:
    """Make a TLS connection to the broker as the rabbit driver does (the
    broker's certificate checked against tls.ca and the address, tls's
    client certificate shown) and read the broker's AMQP greeting.

    The driver retries a refused TLS connection for ever, so rpc_call checks
    first: VerifyError if the broker or its answer is refused, OSError if it
    cannot be reached at all (worth another try)."""
    ca, cert, key = _tls_files(tls, "client")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # verifies the peer and its name
    try:
        context.load_cert_chain(cert, key)
        context.load_verify_locations(ca)
    except ssl.SSLError as exc:
        raise HostError(f"cannot use the client TLS files {cert}, {key}, {ca}: {exc}") from exc
    where = f"the broker at {address}:{port}"
    with socket.create_connection((address, port), timeout=timeout) as raw:
        try:
            with context.wrap_socket(raw, server_hostname=address) as sock:
                sock.sendall(_AMQP_HEADER)
                greeting = sock.recv(8)
        except ssl.SSLCertVerificationError as exc:
            raise VerifyError(f"{where}: its certificate is not trusted: "
                              f"{exc.verify_message}") from exc
        except OSError as exc:
            raise VerifyError(f"{where} refused the TLS connection: "
                              f"{getattr(exc, 'reason', None) or exc}") from exc
    if not greeting.startswith(b"\x01"):
        raise VerifyError(f"{where} refused the TLS connection: closed without an AMQP "
                          "greeting (client certificate not accepted?)")


def rpc_call(url: str, guest_id: str, method: str = "rpc_ping", timeout: float = 30,
             tls: ClientTLS | None = None, rpc_key: str | None = None, **kwargs):
    """Call method on the guest agent as Trove's controller does; over TLS
    with tls's certificates if given; encrypted with rpc_key (the
    instance_rpc_encr_key the agent was given) if given."""
    from oslo_config import cfg
    import oslo_messaging as messaging

    # oslo.messaging registers some of its options (metrics, tracing) on the
    # global CONF only, as the services that use it do: so use that one.
    # The rabbit driver registers its options when loaded, after this: they
    # come from a file, read now, written each time so TLS never lingers.
    conf = cfg.CONF
    with tempfile.TemporaryDirectory(prefix="tib-rpc-") as folder:
        config_file = Path(folder) / "client.conf"
        config_file.write_text(client_config(tls))
        conf([], project="trove-image-builder", default_config_files=[str(config_file)],
             default_config_dirs=[])
    if tls is not None:
        for broker in messaging.TransportURL.parse(conf, url).hosts:
            check_broker_tls(broker.hostname, broker.port or 5672, tls,
                             timeout=min(timeout, 10))
    transport = messaging.get_rpc_transport(conf, url=url)
    try:
        target = messaging.Target(exchange="trove", topic=f"guestagent.{guest_id}",
                                  server=guest_id, version="1.0")
        serializer = secure_rpc.serializer(rpc_key) if rpc_key else None
        client = messaging.get_rpc_client(transport, target, timeout=timeout,
                                          serializer=serializer)
        return client.call({}, method, **kwargs)
    finally:
        transport.cleanup()


def wait_for_rpc(url: str, guest_id: str, deadline_seconds: float,
                 tls: ClientTLS | None = None,
                 rpc_key: str | None = None) -> tuple[object, float]:
    """Call rpc_ping until the agent answers; (answer, seconds waited). A
    TLS refusal or missing TLS files end it at once."""
    import oslo_messaging as messaging
    start = time.monotonic()
    last = "no answer"
    while time.monotonic() - start < deadline_seconds:
        try:
            return (rpc_call(url, guest_id, timeout=20, tls=tls, rpc_key=rpc_key),
                    round(time.monotonic() - start, 1))
        except TroveImageBuilderError:
            raise
        except messaging.MessagingTimeout:
            last = "timed out waiting for the agent's reply"
        except Exception as exc:  # noqa: BLE001 - report the last failure
            last = f"{type(exc).__name__}: {exc}"
            time.sleep(5)
    raise VerifyError(f"the guest agent did not answer rpc_ping on guestagent.{guest_id} "
                      f"within {deadline_seconds:.0f} s ({last})")
