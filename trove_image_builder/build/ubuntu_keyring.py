"""The Ubuntu archive keyring, taken from the Ubuntu archive and pinned.

Debian's archive has no Ubuntu keyring, so an Ubuntu build takes the
``ubuntu-keyring`` package from the Ubuntu archive's own pool and accepts the
archive keyring in it (``usr/share/keyrings/ubuntu-archive-keyring.gpg``)
only when its keys are exactly the Ubuntu archive signing keys pinned here.
A keyring accepted once is kept under the build cache (``ubuntu-keyring/``)
and checked again each time it is handed out.

:func:`verified_keyring` gives that keyring; :func:`verify_release` checks a
mirror's ``dists/<release>/InRelease`` against it with gpgv.
"""
from __future__ import annotations

import os
from pathlib import Path
import shutil
import tempfile
import urllib.error
import urllib.request

from ..errors import BuildError, InputError
from ..plumbing.runner import run
from .cache import cache_dir

DEFAULT_MIRROR = "http://archive.ubuntu.com/ubuntu"

# The Ubuntu archive signing keys, by full fingerprint: exactly the keys of
# ubuntu-archive-keyring.gpg in ubuntu-keyring 2021.03.26 (jammy) and
# 2023.11.28.1 (noble). Published in the ubuntu-keyring source package
# (debian/rules exports the 2018 archive key and the 2012 CD image key by
# these fingerprints; debian/README.source points to the list at
# https://wiki.ubuntu.com/SecurityTeam/FAQ#GPG_Keys_used_by_Ubuntu) and in
# Launchpad bug 1881278 (the 2012 archive and CD image keys). noble's and
# jammy's InRelease are signed by the 2018 key.
ARCHIVE_KEYS = {
    "790BC7277767219C42C86F933B4FE6ACC0B21F32":
        "Ubuntu Archive Automatic Signing Key (2012) <ftpmaster@ubuntu.com>",
    "843938DF228D22F7B3742BC0D94AA3F0EFE21092":
        "Ubuntu CD Image Automatic Signing Key (2012) <cdimage@ubuntu.com>",
    "F6ECB3762474EDA9D21B7022871920D1991BC93C":
        "Ubuntu Archive Automatic Signing Key (2018) <ftpmaster@ubuntu.com>",
}

# The ubuntu-keyring in each release's main pocket
# (dists/<release>/main/binary-amd64/Packages).
KEYRING_VERSIONS = {
    "jammy": "2021.03.26",
    "noble": "2023.11.28.1",
}

POOL = "pool/main/u/ubuntu-keyring"
MEMBER = "usr/share/keyrings/ubuntu-archive-keyring.gpg"
DOWNLOAD_TIMEOUT = 60


def keyring_version(release: str) -> str:
    """The pinned ubuntu-keyring version of an Ubuntu release."""
    try:
        return KEYRING_VERSIONS[release]
    except KeyError:
        raise InputError(f"no pinned ubuntu-keyring for Ubuntu '{release}'; known: "
                         f"{', '.join(sorted(KEYRING_VERSIONS))}") from None


def deb_url(mirror: str | None, release: str) -> str:
    """Where the release's ubuntu-keyring package is in mirror's pool."""
    version = keyring_version(release)
    base = (mirror or DEFAULT_MIRROR).rstrip("/")
    return f"{base}/{POOL}/ubuntu-keyring_{version}_all.deb"


def cached_path(release: str) -> Path:
    """Where the verified keyring of release's ubuntu-keyring is kept."""
    return cache_dir() / "ubuntu-keyring" / keyring_version(release) / Path(MEMBER).name


# --------------------------------------------------------------------------
# Reading keys and signatures (gpg, gpgv; a throwaway home each time)

def fingerprints(keyring: Path) -> list[str] | None:
    """Every fingerprint (keys and subkeys) in keyring, or None when gpg
    reads no key from it."""
    with tempfile.TemporaryDirectory(prefix="tib-gpg-") as home:
        proc = run(["gpg", "--homedir", home, "--batch", "--no-options", "--with-colons",
                    "--show-keys", Path(keyring).resolve()], check=False)
    found = [line.split(":")[9] for line in proc.stdout.splitlines()
             if line.startswith("fpr:")]
    return found if proc.returncode == 0 and found else None


def check_keyring(keyring: Path, origin: str) -> None:
    """Accept keyring only when its keys are exactly ARCHIVE_KEYS; origin
    names it in the error."""
    found = fingerprints(keyring)
    if found is None:
        raise BuildError(f"{origin}: no OpenPGP key could be read from "
                         f"{Path(MEMBER).name}; refusing it")
    foreign = sorted(set(found) - set(ARCHIVE_KEYS))
    missing = sorted(set(ARCHIVE_KEYS) - set(found))
    if foreign or missing:
        detail = "; ".join(part for part in (
            f"not Ubuntu's: {', '.join(foreign)}" if foreign else "",
            f"missing: {', '.join(missing)}" if missing else "") if part)
        raise BuildError(f"{origin}: {Path(MEMBER).name} does not hold exactly the pinned "
                         f"Ubuntu archive signing keys ({detail}); refusing it")


def check_signature(keyring: Path, signed: Path, origin: str) -> str:
    """Check the inline signature of signed (an InRelease) with gpgv and
    keyring; the fingerprint of the pinned key that made it."""
    with tempfile.TemporaryDirectory(prefix="tib-gpgv-") as home:
        proc = run(["gpgv", "--homedir", home, "--status-fd", "1",
                    "--keyring", Path(keyring).resolve(), Path(signed).resolve()],
                   check=False)
    status = [line.split()[1:] for line in proc.stdout.splitlines()
              if line.startswith("[GNUPG:] ")]
    # VALIDSIG <fpr> ... <primary key fpr>: the last field names the key
    signers = [words[-1] for words in status if words[:1] == ["VALIDSIG"]]
    pinned = [fpr for fpr in signers if fpr in ARCHIVE_KEYS]
    if proc.returncode == 0 and pinned:
        return pinned[0]
    problems = sorted({words[0] for words in status if words and words[0] in (
        "BADSIG", "ERRSIG", "NO_PUBKEY", "EXPSIG", "EXPKEYSIG", "REVKEYSIG", "NODATA")})
    why = ", ".join(problems) or (f"signed by {', '.join(signers)}" if signers
                                  else f"gpgv exit code {proc.returncode}")
    raise BuildError(f"{origin}: no valid signature by a pinned Ubuntu archive key "
                     f"({why}); refusing it")


# --------------------------------------------------------------------------
# Fetching

def download(url: str, dest: Path) -> Path:
    """url (http, https or file) into dest."""
    try:
        with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT) as answer, \
                open(dest, "wb") as out:
            shutil.copyfileobj(answer, out)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", None) or exc
        raise BuildError(f"could not download {url}: {reason}") from exc
    return dest


def _extract(deb: Path, where: Path, origin: str) -> Path:
    run(["dpkg-deb", "-x", deb, where])
    member = where / MEMBER
    if not member.is_file():
        raise BuildError(f"{origin}: the package has no {MEMBER}; refusing it")
    return member


def verified_keyring(mirror: str | None, release: str) -> Path:
    """The Ubuntu archive keyring for release, checked against the pinned
    fingerprints: from the build cache, or fetched from mirror's pool
    (default: the Ubuntu archive)."""
    target = cached_path(release)
    if target.is_file():
        try:
            check_keyring(target, str(target))
            return target
        except BuildError:
            target.unlink()         # not what was accepted: fetch it again
    url = deb_url(mirror, release)
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="fetch-", dir=target.parent) as tmp:
        work = Path(tmp)
        deb = download(url, work / "ubuntu-keyring.deb")
        keyring = _extract(deb, work / "root", url)
        check_keyring(keyring, url)
        staged = work / target.name
        shutil.copyfile(keyring, staged)
        os.replace(staged, target)
    return target


def verify_release(mirror: str | None, release: str, suite: str | None = None,
                   keyring: Path | None = None) -> str:
    """Check mirror's dists/<suite>/InRelease (suite: the release, or e.g.
    noble-security) against release's verified keyring; the fingerprint of
    the pinned key that signed it."""
    keyring = keyring or verified_keyring(mirror, release)
    url = f"{(mirror or DEFAULT_MIRROR).rstrip('/')}/dists/{suite or release}/InRelease"
    with tempfile.TemporaryDirectory(prefix="tib-inrelease-") as tmp:
        signed = download(url, Path(tmp) / "InRelease")
        return check_signature(keyring, signed, url)
