"""The pinned Ubuntu archive keyring, offline: packages served from a
file:// mirror, keys made by the real gpg (throwaway keys, nobody's), the
keyring and signatures read by the real gpg and gpgv."""
import os
from pathlib import Path
import tempfile

import pytest

from tests.helpers.gpg import Signer, keyring_of, make_deb
from trove_image_builder.build import ubuntu_keyring as uk
from trove_image_builder.errors import BuildError, InputError

NOBLE_DEB = "pool/main/u/ubuntu-keyring/ubuntu-keyring_2023.11.28.1_all.deb"


@pytest.fixture(scope="module")
def impostor(tmp_path_factory):
    """A key that claims to be Ubuntu's and is not."""
    signer = Signer(tmp_path_factory.mktemp("gpg") / "impostor",
                    "Ubuntu Archive Automatic Signing Key (2018) <ftpmaster@ubuntu.com>")
    yield signer
    signer.close()


@pytest.fixture(scope="module")
def stranger(tmp_path_factory):
    signer = Signer(tmp_path_factory.mktemp("gpg") / "stranger")
    yield signer
    signer.close()


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TROVE_IMAGE_BUILDER_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture
def mirror(tmp_path):
    """serve(keyring) puts an ubuntu-keyring package holding that keyring
    in a file:// mirror's pool, where noble's is; the mirror's URL."""
    root = tmp_path / "mirror"

    def serve(keyring: Path, member: str = uk.MEMBER) -> str:
        make_deb(root / NOBLE_DEB, {member: keyring}, version="2023.11.28.1")
        return f"file://{root}"
    serve.root = root
    return serve


def pin(monkeypatch, *signers):
    monkeypatch.setattr(uk, "ARCHIVE_KEYS", {s.fingerprint: "test" for s in signers})


def ls(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*")) if folder.exists() \
        else []


# --------------------------------------------------------------------------
# The pins

def test_the_pinned_keys_are_full_fingerprints():
    assert len(uk.ARCHIVE_KEYS) == 3
    for fpr in uk.ARCHIVE_KEYS:
        assert len(fpr) == 40 and fpr == fpr.upper() and int(fpr, 16) >= 0
    assert uk.ARCHIVE_KEYS["F6ECB3762474EDA9D21B7022871920D1991BC93C"].startswith(
        "Ubuntu Archive Automatic Signing Key (2018)")


def test_where_the_package_is():
    assert uk.deb_url(None, "noble") == \
        "http://archive.ubuntu.com/ubuntu/" + NOBLE_DEB
    assert uk.deb_url("http://mirror.example/ubuntu/", "jammy") == \
        "http://mirror.example/ubuntu/pool/main/u/ubuntu-keyring/ubuntu-keyring_2021.03.26_all.deb"


def test_a_release_without_a_pinned_keyring_is_refused():
    with pytest.raises(InputError) as info:
        uk.verified_keyring(None, "focal")
    assert info.value.message == \
        "no pinned ubuntu-keyring for Ubuntu 'focal'; known: jammy, noble"


# --------------------------------------------------------------------------
# The keyring's keys

def test_a_tampered_keyring_is_refused_and_not_cached(impostor, mirror, tmp_path, cache):
    url = mirror(impostor.export(tmp_path / "impostor.gpg"))
    with pytest.raises(BuildError) as info:
        uk.verified_keyring(url, "noble")
    assert info.value.message == (
        f"{url}/{NOBLE_DEB}: ubuntu-archive-keyring.gpg does not hold exactly the pinned "
        f"Ubuntu archive signing keys (not Ubuntu's: {impostor.fingerprint}; missing: "
        "790BC7277767219C42C86F933B4FE6ACC0B21F32, 843938DF228D22F7B3742BC0D94AA3F0EFE21092, "
        "F6ECB3762474EDA9D21B7022871920D1991BC93C); refusing it")
    assert ls(cache) == ["ubuntu-keyring", "ubuntu-keyring/2023.11.28.1"]


def test_the_pinned_keys_are_accepted_and_cached(impostor, mirror, monkeypatch, tmp_path,
                                                 cache):
    pin(monkeypatch, impostor)
    url = mirror(impostor.export(tmp_path / "k.gpg"))
    got = uk.verified_keyring(url, "noble")
    assert got == cache / "ubuntu-keyring" / "2023.11.28.1" / "ubuntu-archive-keyring.gpg"
    assert got.read_bytes() == (tmp_path / "k.gpg").read_bytes()
    assert uk.fingerprints(got) == [impostor.fingerprint]
    assert ls(cache / "ubuntu-keyring") == ["2023.11.28.1", str(got.relative_to(
        cache / "ubuntu-keyring"))]
    # the next time, from the cache: no mirror needed
    (mirror.root / NOBLE_DEB).unlink()
    assert uk.verified_keyring(url, "noble") == got


def test_a_key_beside_the_pinned_ones_is_refused(impostor, stranger, mirror, monkeypatch,
                                                 tmp_path):
    pin(monkeypatch, impostor)
    both = keyring_of(tmp_path / "both.gpg", impostor.export(tmp_path / "i.gpg"),
                      stranger.export(tmp_path / "s.gpg"))
    url = mirror(both)
    with pytest.raises(BuildError) as info:
        uk.verified_keyring(url, "noble")
    assert info.value.message.endswith(
        f"(not Ubuntu's: {stranger.fingerprint}); refusing it")


def test_a_missing_pinned_key_is_refused(impostor, stranger, monkeypatch, tmp_path):
    pin(monkeypatch, impostor, stranger)
    with pytest.raises(BuildError) as info:
        uk.check_keyring(impostor.export(tmp_path / "i.gpg"), "here")
    assert info.value.message == (
        "here: ubuntu-archive-keyring.gpg does not hold exactly the pinned Ubuntu archive "
        f"signing keys (missing: {stranger.fingerprint}); refusing it")


def test_a_changed_cached_keyring_is_fetched_again(impostor, stranger, mirror, monkeypatch,
                                                   tmp_path):
    pin(monkeypatch, impostor)
    url = mirror(impostor.export(tmp_path / "k.gpg"))
    cached = uk.verified_keyring(url, "noble")
    stranger.export(tmp_path / "s.gpg")
    cached.write_bytes((tmp_path / "s.gpg").read_bytes())
    assert uk.verified_keyring(url, "noble") == cached
    assert uk.fingerprints(cached) == [impostor.fingerprint]


def test_what_is_not_a_keyring_is_refused(mirror, tmp_path):
    junk = tmp_path / "junk"
    junk.write_text("not a key\n")
    url = mirror(junk)
    with pytest.raises(BuildError) as info:
        uk.verified_keyring(url, "noble")
    assert info.value.message == (f"{url}/{NOBLE_DEB}: no OpenPGP key could be read from "
                                  "ubuntu-archive-keyring.gpg; refusing it")


def test_a_package_without_the_archive_keyring_is_refused(impostor, mirror, tmp_path):
    url = mirror(impostor.export(tmp_path / "k.gpg"),
                 member="usr/share/keyrings/ubuntu-master-keyring.gpg")
    with pytest.raises(BuildError) as info:
        uk.verified_keyring(url, "noble")
    assert info.value.message == (f"{url}/{NOBLE_DEB}: the package has no "
                                  "usr/share/keyrings/ubuntu-archive-keyring.gpg; refusing it")


def test_an_unreachable_mirror_is_one_line(tmp_path):
    url = f"file://{tmp_path}/nowhere"
    with pytest.raises(BuildError) as info:
        uk.verified_keyring(url, "noble")
    assert info.value.message.startswith(f"could not download {url}/{NOBLE_DEB}: ")
    assert "\n" not in info.value.message


# --------------------------------------------------------------------------
# Signatures (gpgv)

RELEASE = "Origin: Ubuntu\nSuite: noble\nCodename: noble\n"


def test_a_release_signed_by_a_pinned_key_verifies(impostor, monkeypatch, tmp_path):
    pin(monkeypatch, impostor)
    keyring = impostor.export(tmp_path / "k.gpg")
    signed = impostor.clearsign(RELEASE, tmp_path / "InRelease")
    assert uk.check_signature(keyring, signed, "InRelease") == impostor.fingerprint


def test_a_changed_release_is_refused(impostor, monkeypatch, tmp_path):
    pin(monkeypatch, impostor)
    keyring = impostor.export(tmp_path / "k.gpg")
    signed = impostor.clearsign(RELEASE, tmp_path / "InRelease")
    signed.write_text(signed.read_text().replace("Suite: noble", "Suite: evil"))
    with pytest.raises(BuildError) as info:
        uk.check_signature(keyring, signed, "InRelease")
    assert info.value.message == ("InRelease: no valid signature by a pinned Ubuntu archive "
                                  "key (BADSIG); refusing it")


def test_a_release_signed_by_another_key_is_refused(impostor, stranger, monkeypatch,
                                                    tmp_path):
    pin(monkeypatch, impostor)
    keyring = impostor.export(tmp_path / "k.gpg")
    signed = stranger.clearsign(RELEASE, tmp_path / "InRelease")
    with pytest.raises(BuildError) as info:
        uk.check_signature(keyring, signed, "InRelease")
    assert info.value.message == ("InRelease: no valid signature by a pinned Ubuntu archive "
                                  "key (ERRSIG, NO_PUBKEY); refusing it")


def test_a_good_signature_by_a_key_not_pinned_is_refused(impostor, stranger, monkeypatch,
                                                         tmp_path):
    pin(monkeypatch, impostor)
    keyring = keyring_of(tmp_path / "both.gpg", impostor.export(tmp_path / "i.gpg"),
                         stranger.export(tmp_path / "s.gpg"))
    signed = stranger.clearsign(RELEASE, tmp_path / "InRelease")
    with pytest.raises(BuildError) as info:
        uk.check_signature(keyring, signed, "InRelease")
    assert info.value.message == ("InRelease: no valid signature by a pinned Ubuntu archive "
                                  f"key (signed by {stranger.fingerprint}); refusing it")


def test_verify_release_reads_the_mirrors_inrelease(impostor, mirror, monkeypatch, tmp_path):
    pin(monkeypatch, impostor)
    url = mirror(impostor.export(tmp_path / "k.gpg"))
    for suite in ("noble", "noble-security"):
        dists = mirror.root / "dists" / suite
        dists.mkdir(parents=True)
        impostor.clearsign(RELEASE, dists / "InRelease")
    assert uk.verify_release(url, "noble") == impostor.fingerprint
    assert uk.verify_release(url, "noble", "noble-security") == impostor.fingerprint
    with pytest.raises(BuildError) as info:
        uk.verify_release(url, "noble", "noble-updates")
    assert info.value.message.startswith(f"could not download {url}/dists/noble-updates/"
                                         "InRelease: ")


def test_gpg_and_gpgv_leave_no_home_behind(impostor, monkeypatch, tmp_path):
    pin(monkeypatch, impostor)
    temp = tmp_path / "temp"
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    keyring = impostor.export(tmp_path / "k.gpg")
    uk.check_keyring(keyring, "here")
    uk.check_signature(keyring, impostor.clearsign(RELEASE, tmp_path / "InRelease"), "here")
    assert os.listdir(temp) == []
