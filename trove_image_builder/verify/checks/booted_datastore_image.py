"""A booted check for test_booted.py (to be moved there): the boot-time check
of the datastore image the agent will run (elements/container-engine,
trove-datastore-image) ran before the agent and found the tag that boot's
injection makes the agent run. Not collected here: the runner runs
test_booted.py only."""
import pytest

# trove/common/cfg.py: the default [<manager>] docker_image
DOCKER_IMAGES = {"mysql": "mysql", "mariadb": "mariadb", "postgresql": "postgres"}


def test_datastore_image_check_ran(host, expect):
    """trove-datastore-image ran before the agent, and its one line names the
    tag the agent will run (contract.injected: the manager's default image,
    the datastore version) as present, or, with nothing preloaded, as missing."""
    if expect.datastore_runtime != "container" or expect.agent_install == "none":
        pytest.skip("no datastore container, or no agent, in this image")
    state = host.run("systemctl is-active trove-datastore-image").stdout.strip()
    said = host.run("sudo journalctl -b -u trove-datastore-image --no-pager -o cat").stdout
    assert state == "active", f"trove-datastore-image.service is {state}: {said[-600:]}"
    lines = [ln for ln in said.splitlines() if ln.startswith("trove-datastore-image: ")]
    assert len(lines) == 1, f"trove-datastore-image said {len(lines)} lines: {said[-600:]}"
    manager = expect.datastore_manager or "mariadb"       # as contract.injected.for_image
    ref = f"{DOCKER_IMAGES[manager]}:{expect.datastore_version or 'latest'}"
    if expect.images:
        assert lines[0].startswith(f"trove-datastore-image: {ref} is present (sha256:") \
            and lines[0].endswith(")") and "the guest agent will run it" in lines[0], lines[0]
    else:
        assert f"the guest agent will run {ref} (" in lines[0] \
            and "which this image does not hold" in lines[0], lines[0]
    # it told before the agent started (Before=)
    shown = {}
    for unit, prop in (("trove-datastore-image", "ActiveEnterTimestampMonotonic"),
                       (expect.paths.agent_unit, "ExecMainStartTimestampMonotonic")):
        shown[unit] = int(host.check_output(f"systemctl show {unit} -p {prop} --value"))
    assert 0 < shown["trove-datastore-image"] <= shown[expect.paths.agent_unit], \
        f"trove-datastore-image did not finish before {expect.paths.agent_unit}: {shown}"
