"""The booted check of trove-datastore-image
(verify/checks/test_booted.py) against a fake booted guest: the
commands it runs answered here."""
from dataclasses import replace
import subprocess

import pytest

from tests.helpers import manifests
from trove_image_builder.verify.checks import test_booted as checks

ID = "sha256:" + "cd" * 32


class Guest:
    """host.run / host.check_output for the check: one answer per command start."""

    def __init__(self, line, state="active", check_at=200, preload_at=100):
        self.answers = {
            "systemctl is-active trove-datastore-image": state,
            "sudo journalctl -b -u trove-datastore-image": f"{line}\n",
            "systemctl show trove-datastore-image": str(check_at),
            "systemctl show trove-preload-images": str(preload_at)}

    def run(self, command):
        for start, out in self.answers.items():
            if command.startswith(start):
                return subprocess.CompletedProcess(command, 0, out + "\n", "")
        raise AssertionError(f"unexpected command {command}")

    def check_output(self, command):
        return self.run(command).stdout.strip()


@pytest.fixture
def expect():
    return replace(manifests.contract("prod-mariadb"), datastore_version="11.8",
                   images=(("mariadb:11.8", ID),))


def present(ref="mariadb:11.8"):
    return (f"trove-datastore-image: {ref} is present ({ID}); the guest agent will run it "
            f"([mariadb] docker_image 'mariadb' (Trove's default), datastore_version "
            f"'{ref.split(':')[1]}' from guest_info.conf)")


def test_the_tag_present_after_the_preload_passes(expect):
    checks.test_datastore_image_check_ran(Guest(present()), expect)


def test_nothing_to_preload_passes(expect):
    # trove-preload-images skipped (no images.list): never active
    checks.test_datastore_image_check_ran(Guest(present(), preload_at=0), expect)


@pytest.mark.parametrize("guest, error", [
    (Guest(present(), state="failed"), "trove-datastore-image.service is failed"),
    (Guest(present("mariadb:10.11")), "mariadb:10.11 is present"),
    (Guest("trove-datastore-image: the guest agent will run mariadb:11.8 (...), which this "
           "image does not hold (nothing was preloaded into it); ..."), "does not hold"),
    (Guest(present(), preload_at=300), "told before trove-preload-images finished"),
    (Guest(present(), check_at=0), "never finished"),
])
def test_failures(expect, guest, error):
    with pytest.raises(AssertionError, match=error.replace("(", r"\(").replace(")", r"\)")):
        checks.test_datastore_image_check_ran(guest, expect)


def test_nothing_preloaded_expects_the_tag_missing(expect):
    line = ("trove-datastore-image: the guest agent will run mariadb:11.8 ([mariadb] "
            "docker_image 'mariadb' (Trove's default), datastore_version '11.8' from "
            "guest_info.conf), which this image does not hold (nothing was preloaded into "
            "it); the agent will pull it at prepare, and with no registry reachable, prepare "
            "will fail")
    checks.test_datastore_image_check_ran(Guest(line), replace(expect, images=()))


def test_package_runtime_and_agentless_images_skip(expect):
    for other in (replace(expect, datastore_runtime="package"),
                  replace(expect, agent_install="none")):
        with pytest.raises(pytest.skip.Exception):
            checks.test_datastore_image_check_ran(Guest(present()), other)
