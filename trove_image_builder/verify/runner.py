"""Run the shipped testinfra checks against an image: offline (mounted
read-only) and, with boot, against the image booted in qemu."""
from dataclasses import dataclass, field
from pathlib import Path
import tempfile
import time

import pytest

from ..plumbing import imagefs, log
from ..errors import VerifyError
from ..contract.expectations import Expectations
from ..plumbing.runner import sha256_of

CHECKS = Path(__file__).resolve().parent / "checks"


@dataclass
class Outcome:
    check: str
    passed: bool
    skipped: bool = False
    message: str = ""


@dataclass
class Report:
    image: str
    outcomes: list = field(default_factory=list)
    seconds: dict = field(default_factory=dict)
    names: dict = field(default_factory=dict)   # pytest's test name -> ours

    @property
    def failed(self) -> list:
        return [o for o in self.outcomes if not o.passed and not o.skipped]


class _Plugin:
    """Gives the checks their fixtures and collects the results."""

    def __init__(self, expect: Expectations, extra_fixtures: dict, report: Report, stage: str,
                 hosts: str):
        self._expect = expect
        self._extra = extra_fixtures
        self._report = report
        self._stage = stage
        self._hosts = hosts

    @pytest.fixture(scope="session")
    def expect(self):
        return self._expect

    @pytest.fixture(scope="session")
    def booted(self):
        return self._extra.get("booted")

    def pytest_runtest_logreport(self, report):
        if report.when == "call" or (report.when == "setup" and not report.passed):
            # test_x[HOSTS-param] -> test_x[param]; test_x[HOSTS] -> test_x
            raw = report.nodeid.split("::", 1)[-1]
            name = raw.replace(f"[{self._hosts}]", "").replace(f"[{self._hosts}-", "[")
            self._report.names[raw] = name
            message = ""
            detail: list = []
            if report.failed:
                crash = getattr(report.longrepr, "reprcrash", None)
                message = crash.message if crash else str(report.longrepr)
                message, *detail = message.splitlines() if message else [""]
                message = message.replace("AssertionError: ", "")
                # what a check adds after its one line (e.g. log tails), not
                # pytest's own explanation of the assertion
                detail = [ln for ln in detail[:DETAIL_LINES]
                          if not ln.startswith(("assert ", " +", "+  where"))]
            elif report.skipped:
                message = report.longrepr[2] if isinstance(report.longrepr, tuple) else ""
            self._report.outcomes.append(Outcome(
                f"{self._stage}::{name}", report.passed, report.skipped, message))
            status = "PASS" if report.passed else "SKIP" if report.skipped else "FAIL"
            line = f"{status} {Path(self._report.image).name}: {self._stage}::{name}"
            if report.failed or report.skipped:
                line += f": {message}"
            log.info(line)
            for extra in detail:
                log.info(f"    {extra}")


# at most this many lines of a failed check's explanation follow its line
DETAIL_LINES = 120


def run_checks(test_file: str, hosts: str, expect: Expectations, report: Report,
               stage: str, junit: Path | None = None, extra_fixtures=None,
               host_args=()) -> None:
    args = [str(CHECKS / test_file), f"--hosts={hosts}", *host_args,
            "-p", "no:cacheprovider", "-p", "no:terminal", "-p", "no:logging",
            "-c", str(CHECKS / "pytest.ini"), "--rootdir", str(CHECKS),
            "-o", "junit_family=xunit2"]
    if junit is not None:
        args += ["--junitxml", str(junit)]
    host_id = hosts
    for arg in host_args:
        if arg.startswith("--connection=") and "://" not in hosts:
            host_id = f"{arg.split('=', 1)[1]}://{hosts}"
    plugin = _Plugin(expect, extra_fixtures or {}, report, stage, host_id)
    code = pytest.main(args, plugins=[plugin])
    if code not in (pytest.ExitCode.OK, pytest.ExitCode.TESTS_FAILED):
        raise VerifyError(f"the {stage} checks could not run (pytest exit {int(code)})")


def offline(image: Path, expect: Expectations, report: Report, junit=None) -> None:
    before = sha256_of(image)
    start = time.monotonic()
    with log.step("offline checks (image mounted read-only)"):
        with imagefs.mounted(image) as root:
            run_checks("test_offline.py", str(root), expect, report, "offline",
                       junit=junit, host_args=("--connection=chroot",))
    report.seconds["offline"] = round(time.monotonic() - start, 1)
    after = sha256_of(image)
    report.outcomes.append(Outcome("offline::image_unchanged", before == after, False,
                                   "" if before == after else
                                   f"the image changed during verification ({before} -> {after})"))


def verify(image: Path, expect: Expectations, boot=False, contract=False,
           junit: Path | None = None, prepare=False) -> Report:
    """Offline checks; with boot, the booted ones; with contract, also the
    agent's answer over RabbitMQ; with prepare, also Trove's prepare and a
    query from the host (report.seconds: prepare_to_healthy, prepare_to_query)."""
    image = Path(image).resolve()
    report = Report(str(image))
    if prepare:
        from .booted import check_prepare
        check_prepare(expect, image)
    with tempfile.TemporaryDirectory(prefix="tib-junit-") as parts:
        def part(stage):
            return Path(parts) / f"{stage}.xml" if junit is not None else None
        offline(image, expect, report, junit=part("offline"))
        if boot or contract or prepare:
            from .booted import booted_checks
            booted_checks(image, expect, report, contract=contract, junit=part("booted"),
                          prepare=prepare)
        if junit is not None:
            _merge_junit(Path(junit), [part("offline"), part("booted")], report.names)
    return report


def _merge_junit(junit: Path, parts, names=None) -> None:
    """One JUnit file with a test suite per stage, the checks named as in
    the report (without testinfra's host in the name)."""
    import xml.etree.ElementTree as ET
    root = ET.Element("testsuites")
    for stage, part in zip(("offline", "booted"), parts):
        if part.is_file():
            tree = ET.parse(part)
            for suite in tree.getroot().iter("testsuite"):
                suite.set("name", f"trove-image-builder {stage}")
                for case in suite.iter("testcase"):
                    case.set("name", (names or {}).get(case.get("name"), case.get("name")))
                root.append(suite)
            part.unlink()
    ET.ElementTree(root).write(junit, encoding="utf-8", xml_declaration=True)
