"""The boot-time certificate hook (elements/trove-certs) loaded as a module
and its parts tested one by one: settings, the branch a boot takes, the
checks' wording (with this machine's openssl and certificates made at test
time), installing and the copy on the volume. test_trove_certs_hook.py runs
the same script as a black box."""
import contextlib
import os
from pathlib import Path
import pwd
import shutil
import stat

import pytest

from tests import pki
from trove_image_builder import shipped_dir
from tests.helpers.scripts import load_script

HOOK = shipped_dir("elements") / "trove-certs" / "static/usr/local/sbin/trove-certs"


def _load():
    return load_script(HOOK, "trove_certs_hook")


tc = _load()
needs_openssl = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl")
USER = pwd.getpwuid(os.getuid()).pw_name


def _set(folder: Path, ca=None, client=None, key_of=None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    if ca is not None:
        (folder / "ca.crt").write_text(ca.cert_pem)
    if client is not None:
        (folder / "client.crt").write_text(client.cert_pem)
        (folder / "client.key").write_text((key_of or client).key_pem)
    return folder


def _settings(root: Path, **changes):
    (root / "etc/trove/conf.d").mkdir(parents=True, exist_ok=True)
    (root / "volume").mkdir(exist_ok=True)
    return tc.Settings(**{
        "staging": str(root / "incoming"), "cert_dir": str(root / "etc/trove/certs"),
        "agent_conf": str(root / "etc/trove/conf.d/zz-trove-certs.conf"), "agent_user": USER,
        "trust_dir": str(root / "trust"), "trust_update": "true",
        "volume_root": str(root / "volume"), "run_dir": str(root / "run"), **changes})


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def _end(issued: pki.Issued) -> str:
    """The certificate's end as openssl x509 -enddate prints it: 'Jan  2 03:04:05 2026 GMT'."""
    cert = issued.cert
    when = cert.not_valid_after_utc if hasattr(cert, "not_valid_after_utc") \
        else cert.not_valid_after
    return f"{when:%b} {when.day:2d} {when:%H:%M:%S %Y} GMT"


# ---------------------------------------------------------------- the script

def test_the_script_runs_on_the_images_own_python():
    lines = HOOK.read_text().splitlines()
    assert lines[0] == "#!/usr/bin/python3"
    assert os.access(HOOK, os.X_OK)


def test_the_docstring_names_the_branches_of_a_boot():
    for branch in (tc.DELIVERED, tc.INSTALLED, tc.KEPT, tc.NOTHING):
        assert f"\n    {branch} " in tc.__doc__


# ---------------------------------------------------------------- settings

def test_read_conf_reads_the_settings_file_as_a_shell_would():
    text = """# Written by the trove-certs element when the image was built.
TROVE_CERTS_VOLUME=LABEL=trove-data
TROVE_CERTS_STAGING=/var/lib/trove-certs/incoming
TROVE_CERTS_USER_HOOK=
export TROVE_CERTS_DIR="/etc/trove/my certs"   # quoted, with a comment
TROVE_CERTS_VOLUME_DIR= .elsewhere
TROVE_CERTS_RUN_DIR='/run/x#y'
TROVE_CERTS_TRUST_DIR="unbalanced
echo not an assignment
"""
    assert tc.read_conf(text) == {
        "TROVE_CERTS_VOLUME": "LABEL=trove-data",
        "TROVE_CERTS_STAGING": "/var/lib/trove-certs/incoming",
        "TROVE_CERTS_USER_HOOK": "",
        "TROVE_CERTS_DIR": "/etc/trove/my certs",
        "TROVE_CERTS_VOLUME_DIR": "",
        "TROVE_CERTS_RUN_DIR": "/run/x#y"}


def test_settings_default_to_the_images_folders(tmp_path):
    s = tc.load_settings({"TROVE_CERTS_CONF": str(tmp_path / "none")}, which=lambda name: None)
    assert s == tc.Settings()
    assert (s.staging, s.cert_dir, s.volume, s.agent_user) == (
        "/var/lib/trove-certs/incoming", "/etc/trove/certs", "/dev/vdb", "trove")
    assert (s.trust_dir, s.trust_update) == ("", "")


def test_the_settings_file_wins_over_the_environment_and_empty_is_the_default(tmp_path):
    conf = tmp_path / "trove-certs"
    conf.write_text("TROVE_CERTS_STAGING=/conf/incoming\nTROVE_CERTS_VOLUME=\n")
    s = tc.load_settings({"TROVE_CERTS_CONF": str(conf), "TROVE_CERTS_STAGING": "/env/incoming",
                          "TROVE_CERTS_VOLUME": "/dev/vde", "TROVE_CERTS_DIR": "/env/certs",
                          "TROVE_CERTS_AGENT_USER": ""}, which=lambda name: None)
    assert s.staging == "/conf/incoming"
    assert s.volume == "/dev/vdb"
    assert s.cert_dir == "/env/certs"
    assert s.agent_user == "trove"


@pytest.mark.parametrize("tools, env, expected", [
    ({"update-ca-certificates"}, {},
     ("/usr/local/share/ca-certificates", "update-ca-certificates")),
    ({"update-ca-trust"}, {}, ("/etc/pki/ca-trust/source/anchors", "update-ca-trust extract")),
    ({"update-ca-certificates"}, {"TROVE_CERTS_TRUST_UPDATE": "true"},
     ("/usr/local/share/ca-certificates", "true")),
    ({"update-ca-certificates"}, {"TROVE_CERTS_TRUST_DIR": "/trust"}, ("/trust", "")),
    (set(), {}, ("", "")),
])
def test_the_trust_store_follows_the_tool_on_the_path(tmp_path, tools, env, expected):
    environ = {"TROVE_CERTS_CONF": str(tmp_path / "none"), **env}
    s = tc.load_settings(environ, which=lambda name: name in tools and f"/usr/sbin/{name}")
    assert (s.trust_dir, s.trust_update) == expected


# ---------------------------------------------------------------- which branch

class Copy:
    """find_copy for choose_source: the copy's folder, and whether it was asked."""

    def __init__(self, folder):
        self.folder, self.asked = folder, 0

    def __call__(self):
        self.asked += 1
        return self.folder


@pytest.mark.parametrize("present, branch, asked", [
    ({"staging": "client.key"}, tc.DELIVERED, 0),
    ({"staging": "ca.crt", "certs": "ca.crt", "copy": "ca.crt"}, tc.DELIVERED, 0),
    ({"certs": "client.crt", "copy": "ca.crt"}, tc.INSTALLED, 0),
    ({"copy": "ca.crt"}, tc.KEPT, 1),
    ({"copy": "notes.txt"}, tc.NOTHING, 1),
    ({}, tc.NOTHING, 1),
])
def test_a_boot_takes_the_first_place_that_holds_a_file(tmp_path, present, branch, asked):
    s = _settings(tmp_path)
    folders = {"staging": Path(s.staging), "certs": Path(s.cert_dir),
               "copy": tmp_path / "volume/.trove-certs"}
    for place, name in present.items():
        folders[place].mkdir(parents=True, exist_ok=True)
        (folders[place] / name).write_text("anything")
    find_copy = Copy(str(folders["copy"]))
    chosen, folder = tc.choose_source(s, find_copy)
    assert chosen == branch
    assert find_copy.asked == asked, "the volume is looked for only when nothing else is there"
    place = {tc.DELIVERED: "staging", tc.INSTALLED: "certs", tc.KEPT: "copy"}.get(branch)
    assert folder == (str(folders[place]) if place else None)


def test_no_volume_is_no_copy(tmp_path):
    assert tc.choose_source(_settings(tmp_path), lambda: None) == (tc.NOTHING, None)


# ---------------------------------------------------------------- checking

@needs_openssl
def test_a_good_set_checks_out_and_is_described(tmp_path, ca, client):
    folder = _set(tmp_path / "set", ca, client)
    assert tc.check_set(folder) is None
    assert tc.describe(folder) == \
        f"CA 'Test Trove CA', client certificate serial {client.serial} valid until {_end(client)}"
    assert tc.check_set(_set(tmp_path / "ca-only", ca)) is None
    assert tc.describe(tmp_path / "ca-only") == "CA 'Test Trove CA'"


@needs_openssl
def test_an_expired_certificate_says_when_it_expired(tmp_path, ca):
    old_ca = pki.make_ca("Old CA", expired=True)
    assert tc.check_set(_set(tmp_path / "a", old_ca)) == \
        f"ca.crt expired on {_end(old_ca)}"
    old = pki.issue(ca, "old", expired=True)
    assert tc.check_set(_set(tmp_path / "b", ca, old)) == \
        f"client.crt expired on {_end(old)}"


@needs_openssl
@pytest.mark.parametrize("files, reason", [
    ({}, "no ca.crt (the CA certificate is required)"),
    ({"ca.crt": ""}, "no ca.crt (the CA certificate is required)"),
    ({"ca.crt": "junk\n"}, "ca.crt is not a PEM certificate"),
    ({"ca.crt": "CA", "client.crt": "CLIENT"}, "client.crt without client.key"),
    ({"ca.crt": "CA", "client.key": "KEY"}, "client.key without client.crt"),
    ({"ca.crt": "CA", "client.crt": "junk\n", "client.key": "KEY"},
     "client.crt is not a PEM certificate"),
    ({"ca.crt": "CA", "client.crt": "CLIENT", "client.key": "-----BEGIN PRIVATE KEY-----\n"},
     "client.key is not a PEM private key (or it is encrypted)"),
    ({"ca.crt": "CA", "client.crt": "CLIENT", "client.key": "OTHER KEY"},
     "client.key does not match client.crt"),
    ({"ca.crt": "OTHER CA", "client.crt": "CLIENT", "client.key": "KEY"},
     "client.crt is not signed by ca.crt (unable to get local issuer certificate)"),
])
def test_a_bad_set_is_named_by_its_first_fault(tmp_path, ca, client, files, reason):
    other = pki.make_ca("Another CA")
    pem = {"CA": ca.cert_pem, "OTHER CA": other.cert_pem, "CLIENT": client.cert_pem,
           "KEY": client.key_pem, "OTHER KEY": pki.issue(ca, "someone else").key_pem}
    tmp_path.joinpath("set").mkdir()
    for name, text in files.items():
        (tmp_path / "set" / name).write_text(pem.get(text, text))
    assert tc.check_set(tmp_path / "set") == reason


def test_same_set_compares_every_file_either_side_has(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    for folder in (a, b):
        folder.mkdir()
        (folder / "ca.crt").write_text("CA")
    assert tc.same_set(a, b)
    (b / "ca.crt").write_text("CA\n")
    assert not tc.same_set(a, b)
    (b / "ca.crt").write_text("CA")
    (a / "client.crt").write_text("C")
    assert not tc.same_set(a, b), "a file only one side has"
    assert not tc.same_set(b, a)


# ---------------------------------------------------------------- installing

@pytest.fixture
def umask():
    """The script's own umask (set when it runs as a program)."""
    old = os.umask(0o077)
    yield
    os.umask(old)


def test_copy_set_replaces_the_set_and_drops_what_the_new_one_lacks(tmp_path, umask):
    source, target = tmp_path / "source", tmp_path / "deep/er/target"
    source.mkdir()
    for name in tc.FILES:
        (source / name).write_text(name)
    tc.copy_set(source, target, USER)
    assert {p.name: p.read_text() for p in target.iterdir()} == {n: n for n in tc.FILES}
    assert (_mode(target), _mode(target / "client.key"), _mode(target / "ca.crt")) == \
        (0o750, 0o400, 0o644)
    assert _mode(tmp_path / "deep") == 0o755, "missing parents as install -d makes them"
    (source / "client.crt").unlink()
    (source / "client.key").unlink()
    (source / "ca.crt").write_text("rotated")
    tc.copy_set(source, target, USER)
    assert {p.name: p.read_text() for p in target.iterdir()} == {"ca.crt": "rotated"}


def test_an_unknown_owner_stops_before_anything_is_made(tmp_path):
    with pytest.raises(LookupError, match="no user and group no-such-user-here"):
        tc.copy_set(tmp_path, tmp_path / "target", "no-such-user-here")
    assert not (tmp_path / "target").exists()


def test_the_agent_is_pointed_at_the_installed_set(tmp_path):
    s = _settings(tmp_path)
    _set(Path(s.cert_dir))
    Path(s.cert_dir, "ca.crt").write_text("CA")
    tc.point_agent(s)
    assert Path(s.agent_conf).read_text().splitlines() == [
        f"# Written by trove-certs at boot: the certificates in {s.cert_dir}.",
        "# TLS itself is switched on by Trove's own configuration (ssl = True).",
        "[oslo_messaging_rabbit]", f"ssl_ca_file = {s.cert_dir}/ca.crt"]
    assert _mode(s.agent_conf) == 0o644
    Path(s.cert_dir, "client.crt").write_text("C")
    tc.point_agent(s)
    assert f"ssl_key_file = {s.cert_dir}/client.key" in Path(s.agent_conf).read_text()
    # no configuration folder (an agentless image): nothing written
    s = _settings(tmp_path, agent_conf=str(tmp_path / "no/such/folder/zz.conf"))
    tc.point_agent(s)
    assert not (tmp_path / "no").exists()


def test_the_ca_is_trusted_once(tmp_path, capsys):
    update = tmp_path / "update"
    update.write_text("#!/bin/sh\necho \"$@\" >> \"$0.ran\"\n")
    update.chmod(0o755)
    s = _settings(tmp_path, trust_update=f"{update} --fresh")
    _set(Path(s.cert_dir))
    Path(s.cert_dir, "ca.crt").write_text("CA")
    tc.trust_ca(s)
    trusted = tmp_path / "trust" / "trove-ca.crt"
    assert capsys.readouterr().out == f"trove-certs: the CA is trusted system-wide ({trusted})\n"
    assert trusted.read_text() == "CA" and _mode(trusted) == 0o644
    tc.trust_ca(s)
    assert capsys.readouterr().out == ""
    assert (tmp_path / "update.ran").read_text() == "--fresh\n", "updated once, with its words"


def test_a_failing_trust_store_update_stops_the_agent(tmp_path, capsys):
    update = tmp_path / "update"
    update.write_text("#!/bin/sh\necho store is read-only\nexit 4\n")
    update.chmod(0o755)
    s = _settings(tmp_path, trust_update=str(update))
    _set(Path(s.cert_dir))
    Path(s.cert_dir, "ca.crt").write_text("CA")
    with pytest.raises(tc.Stop) as stop:
        tc.trust_ca(s)
    assert str(stop.value) == \
        f"{update} failed, the CA is not trusted; the guest agent is not started"
    assert capsys.readouterr().err == "store is read-only\n"


def test_without_a_trust_store_tool_the_ca_is_only_installed(tmp_path, capsys):
    s = _settings(tmp_path, trust_dir="", trust_update="")
    tc.trust_ca(s)
    assert capsys.readouterr().out == \
        "trove-certs: no system trust store tool found; the CA is not added to it\n"
    assert not (tmp_path / "trust").exists()


# ---------------------------------------------------------------- the volume

@pytest.mark.parametrize("volume", ["/dev/null", "LABEL=no-such-label-3f9c2"])
def test_a_volume_that_is_no_block_device_keeps_no_copy(tmp_path, volume):
    notes = []
    s = _settings(tmp_path, volume_root="", volume=volume)
    with contextlib.ExitStack() as stack:
        assert tc.find_volume(s, True, stack, note=notes.append) is None
    assert notes == [f"no data volume at {volume}; no copy is kept"]


def test_a_copy_the_volume_cannot_take_is_only_reported(tmp_path, capsys):
    s = _settings(tmp_path)
    _set(Path(s.cert_dir))
    Path(s.cert_dir, "ca.crt").write_text("CA")
    (tmp_path / "volume").rmdir()
    (tmp_path / "volume").write_text("a file, not a folder")
    tc.keep_copy(s, f"{s.volume_root}/{s.volume_dir}")
    assert capsys.readouterr().out == (
        "trove-certs: could not write the copy on the data volume (.trove-certs); the "
        "certificates are installed, and a rebuild would not find them\n")


@pytest.mark.skipif(os.getuid() != 0, reason="the copy is owned by root")
def test_keep_copy_writes_only_what_changed(tmp_path, capsys):
    s = _settings(tmp_path)
    _set(Path(s.cert_dir))
    Path(s.cert_dir, "ca.crt").write_text("CA")
    copy = f"{s.volume_root}/{s.volume_dir}"
    tc.keep_copy(s, copy)
    said = capsys.readouterr().out
    assert said == "trove-certs: kept a copy on the data volume (.trove-certs)\n"
    assert _mode(copy) == 0o700 and Path(copy, "ca.crt").read_text() == "CA"
    tc.keep_copy(s, copy)
    assert capsys.readouterr().out == ""
    assert sorted(p.name for p in (tmp_path / "volume").iterdir()) == [".trove-certs"]


# ---------------------------------------------------------------- boot and main

@needs_openssl
def test_a_bad_copy_on_the_volume_is_refused_by_name(tmp_path, ca):
    s = _settings(tmp_path)
    _set(tmp_path / "volume/.trove-certs", pki.make_ca("Old CA", expired=True))
    with pytest.raises(tc.Stop) as stop, contextlib.ExitStack() as stack:
        tc.boot(s, stack)
    assert str(stop.value).startswith(
        "refused the copy on the data volume (.trove-certs): ca.crt expired on ")
    assert str(stop.value).endswith("; the guest agent is not started with them")
    assert not Path(s.cert_dir).exists()


def test_the_user_hooks_failures_are_worded_for_the_journal(tmp_path):
    hook = tmp_path / "hook"
    s = _settings(tmp_path, user_hook=str(hook))
    with pytest.raises(tc.Stop, match=f"^the user hook {hook} is missing or not executable; "
                                      "the guest agent is not started$"):
        tc.run_user_hook(s)
    hook.write_text("#!/bin/sh\ntest \"$1\" = \"$TROVE_CERTS_STAGING\" || exit 9\nexit 3\n")
    hook.chmod(0o755)
    with pytest.raises(tc.Stop, match=f"^the user hook {hook} exited with status 3;"):
        tc.run_user_hook(s)
    hook.write_text("#!/bin/sh\nkill -TERM $$\n")
    with pytest.raises(tc.Stop, match="exited with status 143;"):      # as a shell counts it
        tc.run_user_hook(s)


def test_main_answers_a_wrong_command_with_the_usage(capsys):
    assert tc.main(["frob"], environ={}) == 2
    assert capsys.readouterr().err == "usage: trove-certs [boot|sync|check FOLDER]\n"
    assert tc.main(["check"], environ={}) == 1


@needs_openssl
def test_main_check_reports_on_a_folder(tmp_path, ca, capsys):
    environ = {"TROVE_CERTS_CONF": str(tmp_path / "none")}
    assert tc.main(["check", str(tmp_path)], environ) == 1
    assert capsys.readouterr().err == \
        f"trove-certs: {tmp_path}: no ca.crt (the CA certificate is required)\n"
    _set(tmp_path, ca)
    assert tc.main(["check", str(tmp_path)], environ) == 0
    assert capsys.readouterr().out == f"trove-certs: {tmp_path}: CA 'Test Trove CA'\n"


def test_main_says_why_a_boot_could_not_be_done(tmp_path, capsys):
    (tmp_path / "file").write_text("")
    environ = {"TROVE_CERTS_CONF": str(tmp_path / "none"),
               "TROVE_CERTS_STAGING": str(tmp_path / "file/incoming")}
    assert tc.main(["boot"], environ) == 1
    err = capsys.readouterr().err
    assert err.startswith("trove-certs: ") and "file" in err
    assert err.endswith("; the guest agent is not started\n"), err
