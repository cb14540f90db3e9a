"""The pinned Ubuntu archive keyring, for real: ubuntu-keyring from the
Ubuntu archive's pool, its keys against the pins, and the archive's own
InRelease files checked with gpgv and that keyring (network: the Ubuntu
archive; a few seconds); and a build of a noble profile refusing a keyring
that is not Ubuntu's."""
import os

import pytest

from tests.helpers.cli import cli
from tests.helpers.gpg import Signer, keyring_of, make_deb
from trove_image_builder.build import ubuntu_keyring as uk
from trove_image_builder.errors import BuildError

pytestmark = pytest.mark.integration

MIRROR = uk.DEFAULT_MIRROR
KEY_2018 = "F6ECB3762474EDA9D21B7022871920D1991BC93C"


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TROVE_IMAGE_BUILDER_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.mark.parametrize("release", sorted(uk.KEYRING_VERSIONS))
def test_the_archives_keyring_holds_exactly_the_pinned_keys(release, cache):
    keyring = uk.verified_keyring(MIRROR, release)
    assert keyring == cache / "ubuntu-keyring" / uk.KEYRING_VERSIONS[release] / \
        "ubuntu-archive-keyring.gpg"
    assert sorted(uk.fingerprints(keyring)) == sorted(uk.ARCHIVE_KEYS)


@pytest.mark.parametrize("suite", ["noble", "noble-updates", "noble-security"])
def test_the_keyring_verifies_the_archive(suite):
    assert uk.verify_release(MIRROR, "noble", suite) == KEY_2018


def test_jammy_is_signed_by_the_same_key():
    assert uk.verify_release(MIRROR, "jammy") == KEY_2018


def test_a_changed_inrelease_is_refused(tmp_path):
    keyring = uk.verified_keyring(MIRROR, "noble")
    signed = uk.download(f"{MIRROR}/dists/noble/InRelease", tmp_path / "InRelease")
    text = signed.read_text()
    assert "\nCodename: noble\n" in text
    signed.write_text(text.replace("\nCodename: noble\n", "\nCodename: evil\n"))
    with pytest.raises(BuildError) as info:
        uk.check_signature(keyring, signed, "InRelease")
    assert info.value.message == ("InRelease: no valid signature by a pinned Ubuntu archive "
                                  "key (BADSIG); refusing it")


def test_ubuntus_keyring_with_a_key_added_is_refused(tmp_path):
    stranger = Signer(tmp_path / "gnupg")
    try:
        tampered = keyring_of(tmp_path / "tampered.gpg", uk.verified_keyring(MIRROR, "noble"),
                              stranger.export(tmp_path / "stranger.gpg"))
    finally:
        stranger.close()
    with pytest.raises(BuildError) as info:
        uk.check_keyring(tampered, "tampered.gpg")
    assert info.value.message == (
        "tampered.gpg: ubuntu-archive-keyring.gpg does not hold exactly the pinned Ubuntu "
        f"archive signing keys (not Ubuntu's: {stranger.fingerprint}); refusing it")


# --------------------------------------------------------------------------
# A build of a noble profile (the real command line, in a subprocess)

@pytest.mark.parametrize("with_ubuntus_keys", [False, True], ids=["stranger", "added"])
def test_a_tampered_keyring_is_refused(tmp_path, cache, with_ubuntus_keys):
    """A mirror serving an ubuntu-keyring whose keyring is not Ubuntu's (a
    fresh key; or Ubuntu's keys with a fresh one added): the build stops
    before anything is built, with one line, and writes nothing at the
    output path."""
    stranger = Signer(tmp_path / "gnupg")
    try:
        parts = [stranger.export(tmp_path / "stranger.gpg")]
    finally:
        stranger.close()
    if with_ubuntus_keys:
        real = keyring_of(tmp_path / "ubuntu.gpg", uk.verified_keyring(MIRROR, "noble"))
        uk.cached_path("noble").unlink()      # the build must fetch it from the mirror
        parts.insert(0, real)
    root = tmp_path / "mirror"
    make_deb(root / uk.POOL / f"ubuntu-keyring_{uk.KEYRING_VERSIONS['noble']}_all.deb",
             {uk.MEMBER: keyring_of(tmp_path / "tampered.gpg", *parts)})
    out = tmp_path / "out" / "noble.qcow2"
    proc = cli("build", "base-ubuntu", "-o", str(out), "--set", f"ubuntu_mirror=file://{root}",
               env={**os.environ, "TROVE_IMAGE_BUILDER_CACHE": str(cache)}, timeout=600)
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr and proc.stdout == ""
    missing = "" if with_ubuntus_keys else "; missing: " + ", ".join(sorted(uk.ARCHIVE_KEYS))
    deb = f"file://{root}/{uk.POOL}/ubuntu-keyring_{uk.KEYRING_VERSIONS['noble']}_all.deb"
    assert proc.stderr.splitlines()[-1] == (
        f"Error: {deb}: ubuntu-archive-keyring.gpg does not hold exactly the pinned Ubuntu "
        f"archive signing keys (not Ubuntu's: {stranger.fingerprint}{missing}); refusing it")
    assert not out.exists() and sorted(p.name for p in out.parent.iterdir()) == []
    assert not uk.cached_path("noble").exists()
