"""verify, boot and build --verify through click's test runner; the library's
verify, boot and build are replaced at the seam (nothing is mounted or booted)."""
import contextlib
import json
import shlex
import subprocess
from types import SimpleNamespace

import pytest

from trove_image_builder.vm import boot as boot_mod
from trove_image_builder.build import stage as build_mod
from trove_image_builder.contract import expectations as expect_mod
from trove_image_builder.verify import runner as verify_mod
from trove_image_builder.errors import VerifyError

from tests.helpers.cli import assert_error, invoke as run
from tests.helpers import manifests
from tests.helpers.fake_backend import fake_backend


@pytest.fixture
def image(tmp_path):
    path = tmp_path / "img.qcow2"
    path.write_bytes(b"not really an image")
    return path


@pytest.fixture
def manifest(image):
    def _write(name="prod-mariadb"):
        manifests.write(image, name)
    return _write


@pytest.fixture
def fake_verify(monkeypatch):
    """verify_mod.verify records its call and returns fake_verify.outcomes."""
    calls = []

    def verify(image, exp, boot=False, contract=False, junit=None, prepare=False):
        calls.append({"image": image, "expect": exp, "boot": boot, "contract": contract,
                      "junit": junit, "prepare": prepare})
        report = verify_mod.Report(str(image), list(verify.outcomes), {"offline": 1.5})
        return report
    verify.outcomes = [verify_mod.Outcome("offline::test_os_release", True),
                       verify_mod.Outcome("offline::test_no_passwords", False, True, "dev")]
    verify.calls = calls
    monkeypatch.setattr(verify_mod, "verify", verify)
    return verify


# --------------------------------------------------------------------------
# verify: input errors (nothing is run)

def test_verify_missing_image(tmp_path, fake_verify):
    missing = tmp_path / "nope.qcow2"
    assert_error(run("verify", str(missing)), f"{missing}: no such image file")
    assert fake_verify.calls == []


def test_verify_without_a_manifest_hints_at_profile(image, fake_verify):
    result = run("verify", str(image))
    assert_error(result, f"{image}: no manifest (img.qcow2.manifest.json) next to it; "
                         "name the profile it was built from with --profile")
    assert "--profile" in result.stderr
    assert fake_verify.calls == []


def test_verify_manifest_not_json(image, fake_verify):
    expect_mod.manifest_path(image).write_text("{oops")
    result = run("verify", str(image))
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith(f"Error: {expect_mod.manifest_path(image)}: not valid JSON")
    assert "Traceback" not in result.output


def test_verify_unknown_profile(image, fake_verify):
    result = run("verify", str(image), "--profile", "no-such-profile")
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("Error: ")
    assert "no-such-profile" in result.stderr
    assert fake_verify.calls == []


# --------------------------------------------------------------------------
# verify: with the library's verify faked

def test_verify_prints_a_json_summary(image, manifest, fake_verify):
    manifest("prod-mariadb")
    result = run("verify", str(image))
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {"image": str(image), "passed": 1, "skipped": 1,
                                         "failed": [], "seconds": {"offline": 1.5}}
    (call,) = fake_verify.calls
    assert call["image"] == image
    assert (call["boot"], call["contract"], call["junit"]) == (False, False, None)
    assert call["expect"].profile == "prod-mariadb"
    assert call["expect"].server_package == "mariadb-server"


def test_verify_passes_boot_contract_junit_and_profile(image, fake_verify, tmp_path):
    result = run("verify", str(image), "--boot", "--contract", "--junit",
                 str(tmp_path / "r.xml"), "--profile", "prod-postgresql")
    assert result.exit_code == 0, result.output
    (call,) = fake_verify.calls
    assert (call["boot"], call["contract"], call["junit"]) == (True, True, tmp_path / "r.xml")
    assert call["expect"].server_package == "postgresql-17"


def test_verify_prepare_implies_the_contract_test(image, manifest, fake_verify):
    manifest("prod-mariadb")
    result = run("verify", str(image), "--prepare")
    assert result.exit_code == 0, result.output
    (call,) = fake_verify.calls
    assert (call["prepare"], call["contract"], call["boot"]) == (True, True, False)
    assert call["expect"].datastore_manager == "mariadb"


def test_verify_without_prepare_does_not_prepare(image, manifest, fake_verify):
    manifest("prod-mariadb")
    assert run("verify", str(image), "--contract").exit_code == 0
    assert fake_verify.calls[0]["prepare"] is False


def test_verify_prepare_refuses_an_agentless_image(image, manifest, fake_verify):
    manifest("mariadb-package")
    assert_error(run("verify", str(image), "--prepare"),
                 f"--prepare: {image} is agentless (no guest agent to prepare it)")
    assert fake_verify.calls == []


def test_verify_prepare_refuses_a_datastore_from_os_packages(image, fake_verify):
    written = manifests.manifest("prod-mariadb")
    written["contract"]["datastore_runtime"] = "package"
    expect_mod.manifest_path(image).write_text(json.dumps(written))
    assert_error(run("verify", str(image), "--prepare"),
                 f"--prepare: {image} has no datastore in a container (runtime: package); "
                 "the agent prepares only those")
    assert fake_verify.calls == []


def test_verify_prepare_refuses_a_manager_trove_does_not_drive(image, fake_verify):
    written = manifests.manifest("prod-mariadb")
    written["contract"]["datastore_manager"] = "nosuch"
    expect_mod.manifest_path(image).write_text(json.dumps(written))
    result = run("verify", str(image), "--prepare")
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith(f"Error: --prepare: {image}: Trove ")
    assert result.stderr.endswith(" has no datastore manager 'nosuch'\n")
    assert fake_verify.calls == []


def test_verify_passes_sets_with_the_profile(image, fake_verify):
    result = run("verify", str(image), "--profile", "prod-mariadb",
                 "--set", "trove_version=25.0.0")
    assert result.exit_code == 0, result.output
    assert fake_verify.calls[0]["expect"].agent_version == "25.0.0"


def test_verify_failed_checks_exit_1(image, manifest, fake_verify):
    manifest("prod-mariadb")
    fake_verify.outcomes = [
        verify_mod.Outcome("offline::test_os_release", False, False, "found ('debian', 'trixie')"),
        verify_mod.Outcome("offline::test_no_passwords", True),
        verify_mod.Outcome("offline::image_unchanged", False, False, "the image changed")]
    result = run("verify", str(image))
    assert result.exit_code == 1, result.output
    summary = json.loads(result.stdout)
    assert summary["passed"] == 1 and summary["skipped"] == 0
    assert summary["failed"] == ["offline::test_os_release: found ('debian', 'trixie')",
                                 "offline::image_unchanged: the image changed"]
    assert result.stderr == (f"Error: 2 check(s) failed for {image}: "
                             "offline::test_os_release, offline::image_unchanged\n")


def test_verify_library_error_is_a_clean_error(image, manifest, monkeypatch):
    manifest("prod-mariadb")

    def verify(*args, **kwargs):
        raise VerifyError("the offline checks could not run (pytest exit 4)")
    monkeypatch.setattr(verify_mod, "verify", verify)
    assert_error(run("verify", str(image)),
                 "the offline checks could not run (pytest exit 4)", exit_code=1)


# --------------------------------------------------------------------------
# help

def test_verify_help():
    result = run("verify", "--help")
    assert result.exit_code == 0, result.output
    assert "Usage: main verify [OPTIONS] IMAGE" in result.stdout
    assert "Check IMAGE: offline (mounted read-only), and booted with --boot." in result.stdout
    for opt in ("--boot", "--contract", "--prepare", "--profile", "--junit", "--set"):
        assert opt in result.stdout


def test_boot_help():
    result = run("boot", "--help")
    assert result.exit_code == 0, result.output
    assert "Usage: main boot [OPTIONS] IMAGE" in result.stdout
    assert "Boot IMAGE on a throwaway overlay" in result.stdout
    for opt in ("--ssh", "--profile"):
        assert opt in result.stdout


def test_build_help_has_verify():
    result = run("build", "--help")
    assert result.exit_code == 0, result.output
    assert "--verify" in result.stdout
    assert "before it is moved into place" in " ".join(result.stdout.split())


def test_main_help_lists_verify_and_boot():
    result = run("--help")
    assert result.exit_code == 0
    commands = result.stdout.split("Commands:", 1)[1].split()
    assert "verify" in commands and "boot" in commands


# --------------------------------------------------------------------------
# boot (the library's booted replaced at the seam)

@pytest.fixture
def fake_booted(monkeypatch, tmp_path):
    calls = []
    guest = boot_mod.Guest(ssh_port=40222, user="trove", key=tmp_path / "k",
                           console=tmp_path / "c", workdir=tmp_path,
                           instance_id="i-1", accel="tcg",
                           proc=SimpleNamespace(poll=lambda: 0))

    @contextlib.contextmanager
    def booted(image, user, files=None, guest_forwards=(), **kwargs):
        calls.append({"image": image, "user": user, "files": files,
                      "volume": kwargs.get("volume")})
        yield guest
    monkeypatch.setattr(boot_mod, "booted", booted)
    booted.calls = calls
    booted.guest = guest
    return booted


def test_boot_missing_image(tmp_path, fake_booted):
    missing = tmp_path / "nope.qcow2"
    assert_error(run("boot", str(missing)), f"{missing}: no such image file")
    assert fake_booted.calls == []


def test_boot_without_a_manifest_hints_at_profile(image, fake_booted):
    result = run("boot", str(image))
    assert result.exit_code == 2
    assert "--profile" in result.stderr
    assert fake_booted.calls == []


def test_boot_prints_the_ssh_command_and_waits(image, manifest, fake_booted):
    manifest("prod-mariadb")
    result = run("boot", str(image))
    assert result.exit_code == 0, result.output
    assert result.stdout == shlex.join(fake_booted.guest.ssh_argv()) + "\n"
    assert "the VM runs until Ctrl-C" in result.stderr
    (call,) = fake_booted.calls
    assert (call["image"], call["user"]) == (image, "trove")
    assert "datastore_manager=mariadb" in call["files"]["/etc/trove/conf.d/guest_info.conf"]


def test_boot_ssh_opens_a_session(image, manifest, fake_booted, monkeypatch):
    manifest("prod-mariadb")
    sessions = []
    monkeypatch.setattr(subprocess, "run", lambda argv, **kw: sessions.append(argv))
    result = run("boot", str(image), "--ssh")
    assert result.exit_code == 0, result.output
    assert sessions == [fake_booted.guest.ssh_argv()]
    assert "Ctrl-C" not in result.stderr


# --------------------------------------------------------------------------
# build --verify: stage, verify the staged image, publish (a fake backend
# registered in the real registry; verify replaced at the seam)

@pytest.fixture
def fake_build(monkeypatch):
    with fake_backend(monkeypatch) as backend:
        monkeypatch.setattr(build_mod.backends, "get", lambda name: backend())
        yield backend


def test_build_verify_checks_the_staged_image_then_publishes(fake_build, fake_verify, tmp_path):
    out = tmp_path / "x.qcow2"
    result = run("build", "prod-mariadb", "-o", str(out), "--set", "trove_version=25.0.0",
                 "--verify")
    assert result.exit_code == 0, result.output
    (call,) = fake_verify.calls
    # verified where it was staged, before it reached the output path
    assert call["image"].parent.name.startswith(".x.qcow2.")
    assert (call["boot"], call["contract"]) == (False, False)
    assert call["expect"].profile == "prod-mariadb"
    assert call["expect"].agent_version == "25.0.0"
    assert call["expect"].dev_public_key is None
    manifest = json.loads((tmp_path / "x.qcow2.manifest.json").read_text())
    assert manifest["verified"] == {"offline": True, "checks_passed": 1,
                                    "seconds": {"offline": 1.5}}
    assert out.is_file()


def test_build_without_verify_verifies_nothing(fake_build, fake_verify, tmp_path):
    result = run("build", "prod-mariadb", "-o", str(tmp_path / "x.qcow2"))
    assert result.exit_code == 0, result.output
    assert fake_verify.calls == []
    assert "verified" not in json.loads((tmp_path / "x.qcow2.manifest.json").read_text())


def test_build_verify_expects_the_builds_dev_key(fake_build, fake_verify, tmp_path):
    source = tmp_path / "trove"
    source.mkdir()
    (source / "setup.cfg").write_text("[metadata]\nname = trove\n")
    result = run("build", "dev-mariadb", "-o", str(tmp_path / "d.qcow2"),
                 "--set", f"guest_agent.path={source}", "--verify")
    assert result.exit_code == 0, result.output
    expect = fake_verify.calls[0]["expect"]
    assert expect.dev_public_key == (tmp_path / "d.id_ed25519.pub").read_text().strip()
    assert expect.production is False


def test_build_verify_failure_publishes_nothing(fake_build, fake_verify, tmp_path):
    fake_verify.outcomes = [verify_mod.Outcome("offline::test_no_passwords", False, False, "x"),
                            verify_mod.Outcome("offline::test_os_release", True)]
    result = run("build", "prod-mariadb", "-o", str(tmp_path / "x.qcow2"), "--verify")
    # progress lines on stderr, then the one error line
    assert result.exit_code == 1, result.output
    assert result.stderr.splitlines()[-1] == (
        "Error: the built image failed verification (offline::test_no_passwords); "
        "nothing was written to the output path")
    assert "Traceback" not in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.qcow2.log"]


def test_boot_delivers_certificates_and_keeps_a_volume(image, manifest, fake_booted, tmp_path):
    manifest("prod-mariadb")
    certs = tmp_path / "certs"
    certs.mkdir()
    (certs / "ca.crt").write_text("CA\n")
    (certs / "client.crt").write_text("CERT\n")
    (certs / "client.key").write_text("KEY\n")
    volume = tmp_path / "volume.raw"
    result = run("boot", str(image), "--certs", str(certs), "--volume", str(volume))
    assert result.exit_code == 0, result.output
    (call,) = fake_booted.calls
    staged = {path: text for path, text in call["files"].items()
              if path.startswith("/var/lib/trove-certs/incoming/")}
    assert staged == {"/var/lib/trove-certs/incoming/ca.crt": "CA\n",
                      "/var/lib/trove-certs/incoming/client.crt": "CERT\n",
                      "/var/lib/trove-certs/incoming/client.key": "KEY\n"}
    assert call["volume"] == volume
    assert volume.stat().st_size == 2 * 1024 ** 3


def test_boot_certs_without_a_ca(image, manifest, fake_booted, tmp_path):
    manifest("prod-mariadb")
    assert_error(run("boot", str(image), "--certs", str(tmp_path)),
                 f"--certs {tmp_path}: no ca.crt there (the set is ca.crt, and optionally "
                 "client.crt with client.key)")
    assert fake_booted.calls == []


def test_boot_certs_on_an_image_without_the_hook(image, manifest, fake_booted, tmp_path):
    manifest("dev-mariadb")
    (tmp_path / "ca.crt").write_text("CA\n")
    assert_error(run("boot", str(image), "--certs", str(tmp_path)),
                 f"--certs: {image} has no certificate hook (its profile has "
                 "certificates.enabled: false)")
