"""The offline check of the network stack (verify/checks/test_offline.py):
what it asks of each OS, named by the image's contract, on a fake host."""
from dataclasses import replace

import pytest

from tests.helpers import manifests
from trove_image_builder.verify.checks import test_offline as checks


class FakeHost:
    """testinfra's host, as far as the check uses it: installed packages."""

    def __init__(self, *installed):
        self.installed = set(installed)

    def package(self, name):
        return type("Package", (), {"is_installed": name in self.installed})()


@pytest.fixture
def expect():
    return manifests.contract("prod-mariadb")


def on(expect, distro, release):
    return replace(expect, distro=distro, release=release)


def test_ubuntu_needs_netplan_and_resolved(expect):
    checks.test_network_stack(FakeHost("netplan.io", "systemd-resolved"),
                              on(expect, "ubuntu", "noble"))
    with pytest.raises(AssertionError, match="ubuntu noble without systemd-resolved: "
                                             "cloud-init has no network stack"):
        checks.test_network_stack(FakeHost("netplan.io", "ifupdown"),
                                  on(expect, "ubuntu", "noble"))


def test_debian_needs_ifupdown(expect):
    checks.test_network_stack(FakeHost("ifupdown"), on(expect, "debian", "trixie"))
    with pytest.raises(AssertionError, match="debian trixie without ifupdown"):
        checks.test_network_stack(FakeHost("netplan.io"), on(expect, "debian", "trixie"))


def test_another_os_is_skipped(expect):
    with pytest.raises(pytest.skip.Exception, match="no network stack known here for fedora"):
        checks.test_network_stack(FakeHost(), on(expect, "fedora", "42"))
