"""The files Trove injects into a new instance at boot (Nova's injected
files, on the config drive), as Trove 26.0.0 writes them.

Read from the Trove release's own source:
- ``trove/instance/models.py`` ``Instance.get_injected_files``: the
  ``guest_info.conf`` keys and their order, ``trove-guestagent.conf`` (the
  controller's ``guest_config`` file), and the optional
  ``/etc/trove/controller.conf`` (``controller_address``, development mode),
  ``/etc/trove/eth1.json`` (``constants.ETH1_CONFIG_PATH``, with network
  isolation and a user port) and ``/etc/docker/daemon.json``
  (``docker_bridge_network_ip``, ``docker_insecure_registries``).
- ``datastore_registry_ext``: ``"<manager>:<class>"``, the class from
  ``trove/common/constants.py`` ``REGISTRY_EXT_DEFAULTS``.
- ``replication_strategy``: ``"<replication_namespace>.<replication_strategy>"``
  from the datastore's group in ``trove/common/cfg.py``.
- ``instance_rpc_encr_key``: written when secure RPC messaging is on (the
  default, ``enable_secure_rpc_messaging``); the agent then encrypts every
  RPC context and argument with it (``trove/common/rpc/secure_serializer.py``,
  ``trove/cmd/guest.py``), so whoever calls the agent must use the same key.
"""
from dataclasses import dataclass, field
import json
import secrets
import string
import uuid

from .paths import InImagePaths

# trove/common/constants.py REGISTRY_EXT_DEFAULTS
REGISTRY_EXT = {
    "mysql": "trove.guestagent.datastore.mysql.manager.Manager",
    "mariadb": "trove.guestagent.datastore.mariadb.manager.Manager",
    "postgresql": "trove.guestagent.datastore.postgres.manager.PostgresManager",
}
# trove/common/cfg.py: [<manager>] replication_namespace + replication_strategy
REPLICATION = {
    "mysql": "trove.guestagent.strategies.replication.mysql_gtid.MysqlGTIDReplication",
    "mariadb": "trove.guestagent.strategies.replication.mariadb_gtid.MariaDBGTIDReplication",
    "postgresql": "trove.guestagent.strategies.replication.postgresql."
                  "PostgresqlReplicationStreaming",
}
# Trove's ETH1_CONFIG_PATH and where it writes docker's settings
CONTROLLER_CONF = "/etc/trove/controller.conf"
ETH1_CONFIG = "/etc/trove/eth1.json"
DOCKER_DAEMON = "/etc/docker/daemon.json"
# The keys of guest_info.conf, in the order Trove writes them.
GUEST_INFO_KEYS = ("guest_id", "datastore_manager", "datastore_version", "tenant_id",
                   "datastore_registry_ext", "replication_strategy", "ssl_mode",
                   "network_isolation", "instance_rpc_encr_key")


def new_rpc_key(length: int = 32) -> str:
    """A key as Trove makes one (crypto_utils.generate_random_key: letters
    and digits)."""
    chars = string.ascii_letters + string.digits
    return "".join(secrets.choice(chars) for _ in range(length))


@dataclass(frozen=True)
class Injection:
    """What one instance is given at boot. Defaults are Trove's defaults."""
    manager: str                         # datastore_manager (mariadb, mysql, postgresql ...)
    datastore_version: str
    transport_url: str
    guest_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    tenant_id: str = "trove-image-builder"
    ssl_mode: str | None = None          # the instance's ssl_mode (None unless asked for)
    network_isolation: bool = True       # [network] network_isolation
    rpc_key: str | None = field(default_factory=new_rpc_key)   # None: secure RPC off
    controller_address: str | None = None
    eth1: dict | None = None             # network isolation with a user port
    docker_daemon: dict | None = None    # e.g. {"bip": "172.18.0.1/24"}
    agent_options: dict = field(default_factory=dict)   # more [DEFAULT] agent options

    def guest_info(self) -> str:
        values = {
            "guest_id": self.guest_id,
            "datastore_manager": self.manager,
            "datastore_version": self.datastore_version,
            "tenant_id": self.tenant_id,
            "datastore_registry_ext": f"{self.manager}:{REGISTRY_EXT.get(self.manager)}",
            "replication_strategy": REPLICATION.get(self.manager, "None"),
            "ssl_mode": str(self.ssl_mode),
            "network_isolation": str(self.network_isolation),
        }
        if self.rpc_key:
            values["instance_rpc_encr_key"] = self.rpc_key
        return "[DEFAULT]\n" + "".join(f"{k}={values[k]}\n" for k in GUEST_INFO_KEYS
                                       if k in values)

    def agent_conf(self, paths: InImagePaths) -> str:
        """trove-guestagent.conf as an operator's guest_config would hold it."""
        options = {"transport_url": self.transport_url, "control_exchange": "trove",
                   "log_dir": paths.log, "log_file": "trove-guestagent.log",
                   "debug": "True", **self.agent_options}
        return "[DEFAULT]\n" + "".join(f"{k} = {v}\n" for k, v in options.items())

    def files(self, paths: InImagePaths) -> dict[str, str]:
        """{in-image path: content}, as get_injected_files returns them."""
        files = {paths.guest_info: self.guest_info(), paths.agent_conf: self.agent_conf(paths)}
        if self.controller_address:
            files[CONTROLLER_CONF] = f"CONTROLLER={self.controller_address}"
        if self.network_isolation and self.eth1:
            files[ETH1_CONFIG] = json.dumps(self.eth1)
        daemon = dict(self.docker_daemon or {})
        if self.network_isolation and self.eth1:
            # Trove's bridge-less networking when the user port is plugged
            daemon.update({"bridge": "none", "ip-forward": False, "iptables": False})
        if daemon:
            files[DOCKER_DAEMON] = json.dumps(daemon)
        return files


def for_image(expect, transport_url: str, **overrides) -> Injection:
    """What Trove would inject into an instance of this image (Expectations);
    overrides: any Injection field."""
    return Injection(manager=expect.datastore_manager or "mariadb",
                     datastore_version=expect.datastore_version or "",
                     transport_url=transport_url, **overrides)
