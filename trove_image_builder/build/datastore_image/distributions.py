"""The distributions datastore images are built from: their suite, their
default mirrors, their components and what verifies their archive."""
from dataclasses import dataclass
from pathlib import Path

from ..ubuntu_keyring import ARCHIVE_KEYS, keyring_version

ARCH = "amd64"
# Debian's archive; the CLI's defaults (a Debian recipe's defaults too).
DEFAULT_MIRROR = "http://deb.debian.org/debian"
DEFAULT_SECURITY_MIRROR = "http://deb.debian.org/debian-security"
KEYRING = Path("/usr/share/keyrings/debian-archive-keyring.gpg")
# The host's keyring knows trixie when its package ships this (bookworm's
# debian-archive-keyring 2023.3+deb12u2 and later do).
TRIXIE_KEY = Path("/usr/share/keyrings/debian-archive-trixie-stable.gpg")
UBUNTU_MIRROR = "http://archive.ubuntu.com/ubuntu"


class _Default:
    """The 'not given' of a mirror argument: the distribution's own."""

    def __repr__(self) -> str:
        return "DEFAULT"


DEFAULT = _Default()


@dataclass(frozen=True)
class Distribution:
    """Where a recipe's packages come from and what verifies them. The
    keyring is the host's Debian keyring (keyring set), or, for Ubuntu (no
    keyring on a Debian host), the Ubuntu archive keyring that
    build/ubuntu_keyring.py fetches and checks against pinned fingerprints."""
    name: str                     # debian | ubuntu, as profiles name the OS
    suite: str                    # trixie | noble
    mirror: str                   # the default mirror: suite, suite-updates
    security_mirror: str          # the default one of suite-security
    components: tuple[str, ...]
    keyring: Path | None = None   # None: the verified Ubuntu archive keyring

    @property
    def title(self) -> str:
        return f"{self.name.capitalize()} {self.suite}"

    def mirrors(self, mirror=DEFAULT, security_mirror=DEFAULT) -> tuple[str, str | None]:
        """The mirrors to use: DEFAULT (or a None mirror) is this
        distribution's own; a None security mirror leaves security out."""
        if mirror is DEFAULT or mirror is None:
            mirror = self.mirror
        if security_mirror is DEFAULT:
            security_mirror = self.security_mirror
        return mirror, security_mirror

    def sources(self, mirror: str, security_mirror: str | None) -> list[str]:
        """The apt source lines: the suite and its updates from the mirror,
        the security updates from the security mirror (none: no security
        line)."""
        components = " ".join(self.components)
        mirror = mirror.rstrip("/")
        lines = [f"deb {mirror} {self.suite} {components}",
                 f"deb {mirror} {self.suite}-updates {components}"]
        if security_mirror:
            lines.append(f"deb {security_mirror.rstrip('/')} {self.suite}-security "
                         f"{components}")
        return lines

    def keyring_identity(self) -> dict:
        """What verifies the archive, for the inputs hash (no network)."""
        if self.keyring is not None:
            return {"path": str(self.keyring)}
        return {"ubuntu-keyring": keyring_version(self.suite),
                "fingerprints": sorted(ARCHIVE_KEYS)}


TRIXIE = Distribution("debian", "trixie", DEFAULT_MIRROR, DEFAULT_SECURITY_MIRROR,
                      ("main",), KEYRING)
# noble-security is a pocket of the archive itself; mysql-server-8.0 and
# everything it needs are in main.
NOBLE = Distribution("ubuntu", "noble", UBUNTU_MIRROR, UBUNTU_MIRROR, ("main",))
