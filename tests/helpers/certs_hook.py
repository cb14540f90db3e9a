"""The boot-time certificate hook (elements/trove-certs) run on this machine:
its folders moved under a temporary root, the trust store update a no-op."""
import os
from pathlib import Path
import subprocess

from tests import pki
from trove_image_builder import shipped_dir

HOOK = (shipped_dir("elements") / "trove-certs" / "static" / "usr" / "local" / "sbin"
        / "trove-certs")
FILES = ("ca.crt", "client.crt", "client.key")


class Guest:
    """The hook's folders under root, and a way to run it."""

    def __init__(self, root: Path):
        self.root = root
        self.staging = root / "var/lib/trove-certs/incoming"
        self.certs = root / "etc/trove/certs"
        self.conf_d = root / "etc/trove/conf.d"
        self.agent_conf = self.conf_d / "zz-trove-certs.conf"
        self.trust = root / "usr/local/share/ca-certificates"
        self.volume = root / "volume"
        self.copy = self.volume / ".trove-certs"
        self.conf_d.mkdir(parents=True)
        self.volume.mkdir()
        self.user_hook = ""

    def env(self) -> dict:
        user = subprocess.run(["id", "-un"], capture_output=True, text=True).stdout.strip()
        return dict(os.environ, TROVE_CERTS_CONF=str(self.root / "no-such-conf"),
                    TROVE_CERTS_STAGING=str(self.staging), TROVE_CERTS_DIR=str(self.certs),
                    TROVE_CERTS_AGENT_CONF=str(self.agent_conf),
                    TROVE_CERTS_AGENT_USER=user, TROVE_CERTS_TRUST_DIR=str(self.trust),
                    TROVE_CERTS_TRUST_UPDATE="true", TROVE_CERTS_VOLUME_ROOT=str(self.volume),
                    TROVE_CERTS_RUN_DIR=str(self.root / "run"),
                    TROVE_CERTS_USER_HOOK=self.user_hook)

    def run(self, *args) -> subprocess.CompletedProcess:
        # by its #! line, as the image's systemd unit runs it
        return subprocess.run([str(HOOK), *args], capture_output=True, text=True,
                              env=self.env(), timeout=60)

    def deliver(self, ca: pki.Issued, client: pki.Issued | None = None, key_of=None):
        self.staging.mkdir(parents=True, exist_ok=True)
        (self.staging / "ca.crt").write_text(ca.cert_pem)
        if client is not None:
            (self.staging / "client.crt").write_text(client.cert_pem)
            (self.staging / "client.key").write_text((key_of or client).key_pem)

    def installed(self) -> dict:
        return {n: (self.certs / n).read_text() for n in FILES if (self.certs / n).exists()}

    def kept(self) -> dict:
        return {n: (self.copy / n).read_text() for n in FILES if (self.copy / n).exists()}
