"""Throwaway OpenPGP keys, made by the real gpg in a GNUPGHOME of their own,
and a .deb made by dpkg-deb: for the keyring tests."""
from pathlib import Path
import subprocess


def _gpg(home: Path, *args) -> str:
    proc = subprocess.run(
        ["gpg", "--homedir", str(home), "--batch", "--no-options", "--pinentry-mode",
         "loopback", "--passphrase", "", *map(str, args)],
        capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


class Signer:
    """An ed25519 signing key that is nobody's. close() stops the gpg-agent
    that making it started."""

    def __init__(self, home: Path, uid: str = "Not Ubuntu <not-ubuntu@example.invalid>"):
        home.mkdir(mode=0o700, parents=True)
        self.home = home
        _gpg(home, "--quick-gen-key", uid, "ed25519", "sign", "never")
        listing = _gpg(home, "--with-colons", "--list-keys")
        self.fingerprint = next(line.split(":")[9] for line in listing.splitlines()
                                if line.startswith("fpr:"))

    def export(self, dest: Path) -> Path:
        """The public key as a binary keyring file."""
        _gpg(self.home, "--output", dest, "--export", self.fingerprint)
        return dest

    def clearsign(self, text: str, dest: Path) -> Path:
        """text with an inline signature, as an InRelease file is."""
        plain = dest.with_name(dest.name + ".plain")
        plain.write_text(text)
        _gpg(self.home, "--local-user", self.fingerprint, "--output", dest,
             "--clearsign", plain)
        plain.unlink()
        return dest

    def close(self):
        subprocess.run(["gpgconf", "--homedir", str(self.home), "--kill", "gpg-agent"],
                       capture_output=True, timeout=60)


def keyring_of(dest: Path, *parts: Path) -> Path:
    """Binary keyrings joined into one (OpenPGP keyrings concatenate)."""
    dest.write_bytes(b"".join(p.read_bytes() for p in parts))
    return dest


def make_deb(dest: Path, files: dict, package: str = "ubuntu-keyring",
             version: str = "0") -> Path:
    """A .deb holding files ({path in the package: source file})."""
    root = dest.with_name(dest.name + ".root")
    (root / "DEBIAN").mkdir(parents=True)
    (root / "DEBIAN" / "control").write_text(
        f"Package: {package}\nVersion: {version}\nArchitecture: all\n"
        "Maintainer: Tests <tests@example.invalid>\nDescription: test package\n")
    for member, source in files.items():
        target = root / member
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(Path(source).read_bytes())
    dest.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["dpkg-deb", "--root-owner-group", "-Zgzip", "--build", str(root),
                    str(dest)], check=True, capture_output=True, timeout=120)
    return dest
