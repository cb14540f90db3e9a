"""A RabbitMQ of our own on 127.0.0.1, and a Trove-style RPC client.

Trove's controller talks to the guest agent over oslo.messaging; the first
thing it does with a new instance is an RPC call on the agent's topic
(``guestagent.<guest_id>``, server ``guest_id``), such as ``rpc_ping``.
"""
import os
from pathlib import Path
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid

from . import host
from .errors import HostError, VerifyError

START_TIMEOUT = 120
# Debian's /usr/sbin wrappers switch to the rabbitmq user (another HOME,
# another Erlang cookie); the scripts behind them run as the caller.
_DEBIAN_BIN = Path("/usr/lib/rabbitmq/bin")


def _tool(name: str) -> str:
    direct = _DEBIAN_BIN / name
    return str(direct) if direct.exists() else (host.which(name) or name)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _epmd_running() -> bool:
    return subprocess.run(["pgrep", "-x", "epmd"], capture_output=True).returncode == 0


class LocalRabbit:
    """rabbitmq-server started as a plain process, on loopback only, with
    its own node name, ports and data folder; stopped on exit."""

    def __init__(self):
        if host.which("rabbitmq-server") is None:
            raise HostError("rabbitmq-server not found; install 'rabbitmq-server' "
                            "(scripts/install test does)")
        self.port = _free_port()
        self.dist_port = _free_port()
        self.node = f"tib{uuid.uuid4().hex[:8]}@localhost"
        self.home = Path(tempfile.mkdtemp(prefix="tib-rabbit-"))
        self.proc = None
        self._epmd_was_running = _epmd_running()

    @property
    def env(self) -> dict:
        base = self.home
        return dict(os.environ, HOME=str(base), RABBITMQ_NODENAME=self.node,
                    RABBITMQ_NODE_IP_ADDRESS="127.0.0.1",
                    RABBITMQ_NODE_PORT=str(self.port), RABBITMQ_DIST_PORT=str(self.dist_port),
                    RABBITMQ_MNESIA_BASE=str(base / "mnesia"),
                    RABBITMQ_LOG_BASE=str(base / "log"),
                    RABBITMQ_PID_FILE=str(base / "rabbit.pid"),
                    RABBITMQ_ENABLED_PLUGINS_FILE=str(base / "enabled_plugins"),
                    RABBITMQ_CONFIG_FILE=str(base / "rabbitmq"),
                    ERL_EPMD_ADDRESS="127.0.0.1")

    def _listening(self) -> bool:
        """The broker accepts AMQP connections (it listens once booted)."""
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=2) as sock:
                sock.sendall(b"AMQP\x00\x00\x09\x01")
                return len(sock.recv(8)) > 0
        except OSError:
            return False

    @property
    def url(self) -> str:
        return f"rabbit://guest:guest@127.0.0.1:{self.port}/"

    def __enter__(self):
        (self.home / "enabled_plugins").write_text("[].\n")
        (self.home / "rabbitmq.conf").write_text("loopback_users.guest = true\n")
        self.proc = subprocess.Popen([_tool("rabbitmq-server")], env=self.env,
                                     stdout=open(self.home / "server.out", "w"),
                                     stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + START_TIMEOUT
        while not self._listening():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                out = (self.home / "server.out").read_text(errors="replace")[-1500:]
                self.__exit__(None, None, None)
                raise VerifyError(f"RabbitMQ did not start on 127.0.0.1:{self.port}: {out}")
            time.sleep(1)
        return self

    def __exit__(self, *exc):
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        if not self._epmd_was_running and _epmd_running():
            subprocess.run(["epmd", "-kill"], capture_output=True, env=self.env)
        shutil.rmtree(self.home, ignore_errors=True)
        return False


def rpc_call(url: str, guest_id: str, method: str = "rpc_ping", timeout: float = 30, **kwargs):
    """Call method on the guest agent as Trove's controller does."""
    from oslo_config import cfg
    import oslo_messaging as messaging

    # oslo.messaging registers some of its options (metrics, tracing) on the
    # global CONF only, as the services that use it do: so use that one.
    conf = cfg.CONF
    conf([], project="trove-image-builder", default_config_files=[], default_config_dirs=[])
    transport = messaging.get_rpc_transport(conf, url=url)
    try:
        target = messaging.Target(exchange="trove", topic=f"guestagent.{guest_id}",
                                  server=guest_id, version="1.0")
        client = messaging.get_rpc_client(transport, target, timeout=timeout)
        return client.call({}, method, **kwargs)
    finally:
        transport.cleanup()


def wait_for_rpc(url: str, guest_id: str, deadline_seconds: float) -> tuple[object, float]:
    """Call rpc_ping until the agent answers; (answer, seconds waited)."""
    import oslo_messaging as messaging
    start = time.monotonic()
    last = "no answer"
    while time.monotonic() - start < deadline_seconds:
        try:
            return rpc_call(url, guest_id, timeout=20), round(time.monotonic() - start, 1)
        except messaging.MessagingTimeout:
            last = "timed out waiting for the agent's reply"
        except Exception as exc:  # noqa: BLE001 - report the last failure
            last = f"{type(exc).__name__}: {exc}"
            time.sleep(5)
    raise VerifyError(f"the guest agent did not answer rpc_ping on guestagent.{guest_id} "
                      f"within {deadline_seconds:.0f} s ({last})")
