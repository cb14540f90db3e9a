"""The offline checks of the folders the guest agent writes without sudo
(verify/checks/test_offline.py), run on this machine's files through
testinfra's local backend, the in-image paths pointed at a folder here."""
from dataclasses import replace
import getpass
import os

import pytest
import testinfra

from tests.helpers import manifests
from trove_image_builder.verify.checks import test_offline as checks

ME = getpass.getuser()


@pytest.fixture(scope="module")
def host():
    return testinfra.get_host("local://")


@pytest.fixture
def expect(tmp_path):
    contract = manifests.contract("prod-mariadb")
    return replace(contract, guest_user=ME,
                   paths=replace(contract.paths, agent_state=str(tmp_path / "trove-guestagent")))


def test_the_agents_folder_passes(host, expect):
    os.mkdir(expect.paths.agent_state, 0o755)
    checks.test_agent_state_folder(host, expect)


def test_a_missing_folder_is_named(host, expect):
    with pytest.raises(AssertionError, match="trove-guestagent is missing: the agent cannot "
                                             "begin a prepare"):
        checks.test_agent_state_folder(host, expect)


def test_a_folder_the_agent_cannot_write(host, expect):
    os.mkdir(expect.paths.agent_state, 0o555)
    with pytest.raises(AssertionError, match=r"\(mode 0o555\); the agent writes there as"):
        checks.test_agent_state_folder(host, expect)


def test_a_left_prepare_marker_fails(host, expect):
    """The end marker tells a new instance's agent that prepare is done."""
    os.mkdir(expect.paths.agent_state, 0o755)
    open(os.path.join(expect.paths.agent_state, ".guestagent.prepare.end"), "w").close()
    with pytest.raises(AssertionError, match="a new image has .*/.guestagent.prepare.end"):
        checks.test_agent_state_folder(host, expect)


def test_agentless_images_skip(host, expect):
    with pytest.raises(pytest.skip.Exception, match="agentless image"):
        checks.test_agent_state_folder(host, replace(expect, agent_install="none"))


def test_the_guest_users_home(host, expect):
    if not os.path.isdir(os.path.expanduser("~")):
        pytest.skip("no home here")
    checks.test_guest_user_home(host, expect)
