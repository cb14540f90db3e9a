"""The check runner: small generated testinfra test files run in-process
(pytest.main) with verify's plugin, against the local machine or hosts that
are never contacted; the outcomes land in a Report. No image is mounted."""
import contextlib
from pathlib import Path
import textwrap
import uuid
import xml.etree.ElementTree as ET

import pytest

from tests.helpers import manifests
from trove_image_builder.plumbing import imagefs
from trove_image_builder.verify import runner as verify
from trove_image_builder.errors import VerifyError

CHECKS = '''
import pytest


def test_passes(host, expect):
    assert host.file("/").is_directory
    assert expect.server_package == "mariadb-server"


def test_fails(host, expect):
    assert expect.distro == "fedora", f"found distro {expect.distro}\\nsecond line"


def test_skips(host, expect):
    if expect.production:
        pytest.skip("development image")


@pytest.mark.parametrize("path", ["/", "/no/such/dir/tib"])
def test_param(host, path):
    assert host.file(path).exists, f"{path} is missing"


@pytest.fixture
def broken():
    raise RuntimeError("fixture blew up")


def test_setup_error(host, broken):
    pass


@pytest.mark.skip(reason="never runs")
def test_marked_skip(host):
    pass
'''

EXPECTED = [
    # check, passed, skipped, message
    ("offline::test_passes", True, False, ""),
    ("offline::test_fails", False, False, "found distro debian"),
    ("offline::test_skips", False, True, "development image"),
    ("offline::test_param[/]", True, False, ""),
    ("offline::test_param[/no/such/dir/tib]", False, False, "/no/such/dir/tib is missing"),
    ("offline::test_setup_error", False, False, "RuntimeError: fixture blew up"),
    ("offline::test_marked_skip", False, True, "never runs"),
]


@pytest.fixture(scope="module")
def prod_expect():
    return manifests.contract("prod-mariadb")


@pytest.fixture
def checks_file(tmp_path):
    """checks_file(text) -> Path: a test file with a name no other test uses
    (pytest.main runs in this process: module names must not collide)."""
    def _write(text=CHECKS):
        path = tmp_path / f"test_tib_{uuid.uuid4().hex[:12]}.py"
        path.write_text(textwrap.dedent(text))
        return path
    return _write


def run_plugin(path: Path, exp, report, hosts="local://", host_id="local", extra=None,
               stage="offline"):
    """Run path with verify's plugin as run_checks does (testinfra's local
    connection: its pytest id is 'local')."""
    plugin = verify._Plugin(exp, extra or {}, report, stage, host_id)
    code = pytest.main([str(path), f"--hosts={hosts}", "-p", "no:cacheprovider",
                        "-p", "no:terminal", "-p", "no:logging",
                        "-c", str(verify.CHECKS / "pytest.ini"),
                        "--rootdir", str(path.parent)], plugins=[plugin])
    return code


def summary(report):
    return [(o.check, o.passed, o.skipped, o.message) for o in report.outcomes]


def normalised(report):
    """The skip reason without pytest's 'Skipped: ' prefix."""
    return [(c, p, s, m.removeprefix("Skipped: ") if s else m) for c, p, s, m in summary(report)]


# --------------------------------------------------------------------------
# the plugin

def test_plugin_collects_every_outcome(checks_file, prod_expect):
    report = verify.Report("/images/x.qcow2")
    code = run_plugin(checks_file(), prod_expect, report)
    assert code == pytest.ExitCode.TESTS_FAILED
    assert normalised(report) == EXPECTED
    assert [o.check for o in report.failed] == [
        "offline::test_fails", "offline::test_param[/no/such/dir/tib]",
        "offline::test_setup_error"]


def test_plugin_failure_message_is_the_first_line_of_the_assertion(checks_file, prod_expect):
    report = verify.Report("/images/x.qcow2")
    run_plugin(checks_file(), prod_expect, report)
    failed = {o.check: o.message for o in report.failed}
    assert failed["offline::test_fails"] == "found distro debian"
    assert not any("AssertionError" in m or "\n" in m for m in failed.values())


def test_plugin_assert_without_a_message(checks_file, prod_expect):
    report = verify.Report("/images/x.qcow2")
    run_plugin(checks_file("def test_bare(host):\n    assert 1 == 2\n"), prod_expect, report)
    (outcome,) = report.outcomes
    assert (outcome.check, outcome.passed, outcome.skipped) == \
        ("offline::test_bare", False, False)
    assert outcome.message == "assert 1 == 2"


def test_plugin_logs_a_line_per_check(checks_file, prod_expect, capfd):
    run_plugin(checks_file(), prod_expect, verify.Report("/images/x.qcow2"))
    err = capfd.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.split(" ", 1)[0] in ("PASS", "FAIL", "SKIP")]
    assert lines[0] == "PASS x.qcow2: offline::test_passes"
    assert lines[1] == "FAIL x.qcow2: offline::test_fails: found distro debian"
    assert lines[2].startswith("SKIP x.qcow2: offline::test_skips: ")
    assert lines[2].endswith("development image")
    assert len(lines) == len(EXPECTED)


def test_plugin_logs_what_a_failed_check_adds_below_its_line(checks_file, prod_expect, capfd):
    path = checks_file(
        "def test_tails(host):\n"
        "    raise AssertionError('prepare failed; status x\\ndocker logs:\\ninitdb: boom')\n"
        "def test_plain(host):\n    assert 1 == 2, 'one line'\n")
    report = verify.Report("/images/x.qcow2")
    run_plugin(path, prod_expect, report)
    assert {o.check: o.message for o in report.failed} == {
        "offline::test_tails": "prepare failed; status x", "offline::test_plain": "one line"}
    err = capfd.readouterr().err.splitlines()
    at = err.index("FAIL x.qcow2: offline::test_tails: prepare failed; status x")
    assert err[at + 1:at + 3] == ["    docker logs:", "    initdb: boom"]
    # pytest's own explanation of an assert is not repeated
    at = err.index("FAIL x.qcow2: offline::test_plain: one line")
    assert not err[at + 1:] or not err[at + 1].startswith("    ")


def test_plugin_gives_the_expect_and_booted_fixtures(checks_file, prod_expect):
    path = checks_file('''
        def test_expect(expect):
            assert expect.profile == "prod-mariadb"
            assert expect.image == "/images/x.qcow2"

        def test_booted(booted):
            assert booted == {"guest_id": "g-7", "contract": False}
    ''')
    report = verify.Report("/images/x.qcow2")
    run_plugin(path, prod_expect, report, stage="booted",
               extra={"booted": {"guest_id": "g-7", "contract": False}})
    assert summary(report) == [("booted::test_expect", True, False, ""),
                               ("booted::test_booted", True, False, "")]


def test_plugin_booted_fixture_is_none_offline(checks_file, prod_expect):
    report = verify.Report("/images/x.qcow2")
    run_plugin(checks_file("def test_b(booted):\n    assert booted is None\n"),
               prod_expect, report)
    assert summary(report) == [("offline::test_b", True, False, "")]


def test_plugin_development_image_runs_the_dev_check(checks_file, tmp_path):
    dev = manifests.contract("dev-mariadb", image=tmp_path / "x")
    report = verify.Report("/images/x.qcow2")
    run_plugin(checks_file(), dev, report)
    assert ("offline::test_skips", True, False, "") in summary(report)


# --------------------------------------------------------------------------
# run_checks (an absolute test file: CHECKS / "/abs/path" is "/abs/path")

def test_run_checks_with_the_local_connection(checks_file, prod_expect):
    report = verify.Report("/images/x.qcow2")
    verify.run_checks(str(checks_file()), "local://", prod_expect, report, "offline")
    outcomes = {o.check.replace("[local]", "").replace("[local-", "["): o
                for o in report.outcomes}
    assert [(c, o.passed, o.skipped) for c, o in outcomes.items()] == \
        [(c, p, s) for c, p, s, _ in EXPECTED]


@pytest.mark.parametrize("hosts, host_args", [
    # as offline() runs them: a mounted root, testinfra's chroot connection
    ("{root}", ("--connection=chroot",)),
    # as booted_checks() runs them: a host named in an ssh_config
    ("paramiko://tib-guest", ()),
])
def test_run_checks_strips_the_host_id(checks_file, prod_expect, tmp_path, hosts, host_args):
    """The checks here never run a command: no root, no ssh needed."""
    root = tmp_path / "root"
    root.mkdir()
    path = checks_file('''
        import pytest

        def test_one(host, expect):
            assert expect.guest_user == "trove"

        @pytest.mark.parametrize("n", [1, 2])
        def test_two(host, n):
            assert n == 1, f"n is {n}"
    ''')
    report = verify.Report("/images/x.qcow2")
    verify.run_checks(str(path), hosts.format(root=root), prod_expect, report, "offline",
                      host_args=host_args)
    assert summary(report) == [("offline::test_one", True, False, ""),
                               ("offline::test_two[1]", True, False, ""),
                               ("offline::test_two[2]", False, False, "n is 2")]


def test_run_checks_writes_junit(checks_file, prod_expect, tmp_path):
    junit = tmp_path / "part.xml"
    verify.run_checks(str(checks_file()), "local://", prod_expect,
                      verify.Report("/images/x.qcow2"), "offline", junit=junit)
    suite = ET.parse(junit).getroot().find("testsuite")
    assert suite.get("tests") == str(len(EXPECTED))
    assert suite.get("failures") == "2" and suite.get("errors") == "1"


def test_run_checks_nothing_collected_is_an_error(checks_file, prod_expect):
    path = checks_file("def helper():\n    pass\n")
    with pytest.raises(VerifyError) as err:
        verify.run_checks(str(path), "local://", prod_expect,
                          verify.Report("/images/x.qcow2"), "offline")
    assert err.value.message == "the offline checks could not run (pytest exit 5)"


def test_run_checks_broken_test_file_is_an_error(checks_file, prod_expect):
    path = checks_file("def test_x(host:\n")
    with pytest.raises(VerifyError, match=r"the booted checks could not run \(pytest exit 2\)"):
        verify.run_checks(str(path), "local://", prod_expect,
                          verify.Report("/images/x.qcow2"), "booted")


def test_the_shipped_checks_exist():
    assert (verify.CHECKS / "test_offline.py").is_file()
    assert (verify.CHECKS / "test_booted.py").is_file()
    assert (verify.CHECKS / "pytest.ini").is_file()


# --------------------------------------------------------------------------
# Report

def test_report_failed_is_neither_passed_nor_skipped():
    report = verify.Report("x", [verify.Outcome("a", True), verify.Outcome("b", False),
                                 verify.Outcome("c", False, True, "why")])
    assert [o.check for o in report.failed] == ["b"]


# --------------------------------------------------------------------------
# JUnit parts and their merge

SUITE = ('<?xml version="1.0" encoding="utf-8"?><testsuites name="pytest tests">'
         '<testsuite name="pytest" errors="0" failures="{f}" skipped="0" tests="{n}">'
         '{cases}</testsuite></testsuites>')


def write_suite(path: Path, names, failing=()) -> Path:
    cases = "".join(f'<testcase classname="" name="{n}">'
                    + ('<failure message="no"/>' if n in failing else "") + "</testcase>"
                    for n in names)
    path.write_text(SUITE.format(f=len(failing), n=len(names), cases=cases))
    return path


@pytest.fixture
def parts(tmp_path):
    """Where the stages' JUnit files are written before the merge."""
    folder = tmp_path / "parts"
    folder.mkdir()
    return {"offline": folder / "offline.xml", "booted": folder / "booted.xml"}


def test_merge_junit_two_parts(tmp_path, parts):
    junit = tmp_path / "report.xml"
    write_suite(parts["offline"], ["test_os_release", "test_no_passwords"])
    write_suite(parts["booted"], ["test_guest_agent_active"],
                failing=["test_guest_agent_active"])
    verify._merge_junit(junit, [parts["offline"], parts["booted"]])
    root = ET.parse(junit).getroot()
    assert root.tag == "testsuites"
    suites = root.findall("testsuite")
    assert [s.get("name") for s in suites] == ["trove-image-builder offline",
                                               "trove-image-builder booted"]
    assert [[c.get("name") for c in s.iter("testcase")] for s in suites] == [
        ["test_os_release", "test_no_passwords"], ["test_guest_agent_active"]]
    assert suites[1].find("testcase/failure") is not None
    assert suites[1].get("failures") == "1"
    assert not any(p.exists() for p in parts.values())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["parts", "report.xml"]


def test_merge_junit_offline_only(tmp_path, parts):
    junit = tmp_path / "report.xml"
    write_suite(parts["offline"], ["test_os_release"])
    verify._merge_junit(junit, [parts["offline"], parts["booted"]])
    suites = ET.parse(junit).getroot().findall("testsuite")
    assert [s.get("name") for s in suites] == ["trove-image-builder offline"]
    assert [c.get("name") for c in suites[0].iter("testcase")] == ["test_os_release"]


def test_merge_junit_replaces_an_old_report(tmp_path, parts):
    junit = tmp_path / "report.xml"
    junit.write_text("stale")
    write_suite(parts["offline"], ["test_os_release"])
    verify._merge_junit(junit, [parts["offline"], parts["booted"]])
    assert len(ET.parse(junit).getroot().findall("testsuite")) == 1


# --------------------------------------------------------------------------
# offline() and verify(), with the mount and the checks replaced at the seam

@pytest.fixture
def image(tmp_path):
    path = tmp_path / "x.qcow2"
    path.write_bytes(b"an image" * 1000)
    return path


@pytest.fixture
def fake_checks(monkeypatch, tmp_path):
    """imagefs.mounted yields a folder; run_checks records its calls and
    runs fake_checks.effect(call) if set."""
    calls = []

    @contextlib.contextmanager
    def mounted(image):
        root = tmp_path / "mnt"
        root.mkdir(exist_ok=True)
        calls.append(("mounted", Path(image)))
        yield root

    def run_checks(test_file, hosts, exp, report, stage, junit=None, extra_fixtures=None,
                   host_args=()):
        call = {"test_file": test_file, "hosts": hosts, "stage": stage, "junit": junit,
                "host_args": host_args, "report": report}
        calls.append(("run_checks", call))
        report.outcomes.append(verify.Outcome(f"{stage}::test_fake", True))
        if run_checks.effect:
            run_checks.effect(call)

    run_checks.effect = None
    monkeypatch.setattr(imagefs, "mounted", mounted)
    monkeypatch.setattr(verify, "run_checks", run_checks)
    run_checks.calls = calls
    return run_checks


def test_offline_runs_the_offline_checks_in_the_mounted_root(image, prod_expect, fake_checks,
                                                             tmp_path):
    report = verify.Report(str(image))
    verify.offline(image, prod_expect, report, junit=tmp_path / "j")
    (kind, mounted), (_, call) = fake_checks.calls
    assert (kind, mounted) == ("mounted", image)
    assert call["test_file"] == "test_offline.py"
    assert call["hosts"] == str(tmp_path / "mnt")
    assert call["host_args"] == ("--connection=chroot",)
    assert call["junit"] == tmp_path / "j"
    assert [(o.check, o.passed) for o in report.outcomes] == [
        ("offline::test_fake", True), ("offline::image_unchanged", True)]
    assert "offline" in report.seconds


def test_offline_notices_a_changed_image(image, prod_expect, fake_checks):
    fake_checks.effect = lambda call: image.write_bytes(b"changed")
    report = verify.Report(str(image))
    verify.offline(image, prod_expect, report)
    (unchanged,) = [o for o in report.outcomes if o.check == "offline::image_unchanged"]
    assert unchanged.passed is False
    assert unchanged.message.startswith("the image changed during verification (")
    assert report.failed == [unchanged]


@pytest.fixture
def fake_booted(monkeypatch):
    from trove_image_builder.verify import booted as boot
    calls = []

    def booted_checks(image, exp, report, contract=False, junit=None, prepare=False):
        calls.append({"image": image, "contract": contract, "junit": junit})
        if prepare:
            calls[-1]["prepare"] = True
        report.outcomes.append(verify.Outcome("booted::test_fake", False, False, "no"))
        if junit is not None:
            write_suite(junit, ["test_fake"], failing=["test_fake"])
    monkeypatch.setattr(boot, "booted_checks", booted_checks)
    return calls


def test_verify_offline_only(image, prod_expect, fake_checks, fake_booted):
    report = verify.verify(image, prod_expect)
    assert report.image == str(image.resolve())
    assert fake_booted == []
    assert [o.check for o in report.outcomes] == ["offline::test_fake",
                                                  "offline::image_unchanged"]


@pytest.mark.parametrize("boot, contract", [(True, False), (False, True), (True, True)])
def test_verify_boot_and_contract(image, prod_expect, fake_checks, fake_booted, boot,
                                  contract):
    report = verify.verify(image, prod_expect, boot=boot, contract=contract)
    assert fake_booted == [{"image": image.resolve(), "contract": contract, "junit": None}]
    assert [o.check for o in report.failed] == ["booted::test_fake"]


def test_verify_prepare_boots_for_it(image, prod_expect, fake_checks, fake_booted):
    verify.verify(image, prod_expect, prepare=True)
    assert fake_booted == [{"image": image.resolve(), "contract": False, "junit": None,
                            "prepare": True}]


def test_verify_prepare_refuses_an_agentless_image_before_any_check(
        image, fake_checks, fake_booted):
    from trove_image_builder.errors import InputError
    agentless = manifests.contract("mariadb-package", image=str(image))
    with pytest.raises(InputError, match="is agentless"):
        verify.verify(image, agentless, prepare=True)
    assert fake_checks.calls == [] and fake_booted == []


def test_verify_junit_has_a_suite_per_stage(image, prod_expect, fake_checks, fake_booted,
                                            tmp_path):
    junit = tmp_path / "report.xml"
    fake_checks.effect = lambda call: write_suite(call["junit"], ["test_fake"])
    verify.verify(image, prod_expect, boot=True, junit=junit)
    offline_part = fake_checks.calls[1][1]["junit"]
    booted_part = fake_booted[0]["junit"]
    assert offline_part is not None and booted_part is not None
    assert len({offline_part, booted_part, junit}) == 3
    suites = ET.parse(junit).getroot().findall("testsuite")
    assert [s.get("name") for s in suites] == ["trove-image-builder offline",
                                               "trove-image-builder booted"]
    # the parts are gone; nothing but the report is left beside it
    assert not offline_part.exists() and not booted_part.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mnt", "report.xml", "x.qcow2"]


def test_verify_junit_offline_only(image, prod_expect, fake_checks, fake_booted, tmp_path):
    junit = tmp_path / "report.xml"
    fake_checks.effect = lambda call: write_suite(call["junit"], ["test_fake"])
    verify.verify(image, prod_expect, junit=junit)
    suites = ET.parse(junit).getroot().findall("testsuite")
    assert [s.get("name") for s in suites] == ["trove-image-builder offline"]


def test_verify_without_junit_writes_none(image, prod_expect, fake_checks, fake_booted):
    verify.verify(image, prod_expect, boot=True)
    assert fake_checks.calls[1][1]["junit"] is None
    assert fake_booted[0]["junit"] is None


def test_merge_junit_names_checks_as_the_report_does(tmp_path, parts):
    junit = tmp_path / "report.xml"
    write_suite(parts["offline"], ["test_dirs[chroot:///m/root-/etc/trove]", "test_os_release"])
    verify._merge_junit(junit, [parts["offline"], parts["booted"]],
                        {"test_dirs[chroot:///m/root-/etc/trove]": "test_dirs[/etc/trove]"})
    names = [c.get("name") for c in ET.parse(junit).getroot().iter("testcase")]
    assert names == ["test_dirs[/etc/trove]", "test_os_release"]
