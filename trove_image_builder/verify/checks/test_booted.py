"""Booted checks: the image running in qemu, checked over ssh; and the
Trove contract test: the agent answers an RPC call over RabbitMQ, and with
--prepare prepares its datastore as Trove asks it to."""
import configparser

import pytest

AGENT_DEADLINE = 600


def test_cloud_init_finished_without_errors(host):
    result = host.run("cloud-init status --wait --long")
    assert "status: done" in result.stdout, \
        f"cloud-init: {result.stdout.strip()} {result.stderr.strip()}"
    assert result.rc == 0, f"cloud-init reports errors: {result.stdout.strip()}"


def test_trove_files_injected(host, expect, booted):
    """Every file Trove injected arrived as given (cloud-init writes them
    from the config drive), and the agent's user can read its own."""
    injected = booted["files"]
    for path, content in sorted(injected.items()):
        with host.sudo():
            found = host.file(path)
            assert found.exists, f"cloud-init did not write {path}"
            assert found.content_string.strip() == content.strip(), \
                f"{path} differs from what was injected: {found.content_string[:200]!r}"
    conf = host.file(expect.paths.guest_info)
    if expect.agent_install != "none":
        # the agent runs as the guest user and must be able to read it
        assert conf.user == expect.guest_user, \
            f"guest_info.conf is owned by {conf.user}, the agent runs as {expect.guest_user}"


def test_datastore_service_running(host, expect):
    if expect.datastore_runtime != "package":
        pytest.skip("no datastore service from OS packages in this image")
    service = host.service(expect.datastore_service)
    status = host.run(f"systemctl status {expect.datastore_service} --no-pager").stdout
    assert service.is_running, f"{expect.datastore_service} is not running: {status[-400:]}"


def test_datastore_answers_a_query(host, expect):
    if expect.datastore_runtime != "package" or not expect.datastore_query:
        pytest.skip("no datastore query for this image")
    with host.sudo():
        result = host.run(expect.datastore_query)
    assert result.rc == 0, f"query failed: {result.stderr.strip()[-300:]}"
    if expect.datastore_version:
        assert expect.datastore_version in result.stdout, \
            f"query answered {result.stdout.strip()!r}"


def test_container_engine_active(host, expect):
    if expect.datastore_runtime != "container":
        pytest.skip("no container runtime in this image")
    assert host.service("docker").is_running, "docker.service is not running"
    result = host.run(f"sudo -u {expect.guest_user} docker info --format '{{{{.ServerVersion}}}}'")
    assert result.rc == 0, f"the agent's user cannot reach the engine: {result.stderr.strip()}"


def test_preloaded_images_listed_without_a_pull(host, expect):
    """The guest's network reaches no registry (restrict=on): an image the
    engine lists was loaded from the image, not pulled."""
    if not expect.images:
        pytest.skip("no preloaded container images in this image")
    state = host.run("systemctl is-active trove-preload-images").stdout.strip()
    assert state == "active", "trove-preload-images.service is " + state + ": " + \
        host.run("sudo journalctl -u trove-preload-images --no-pager -n 10").stdout[-600:]
    for ref, image_id in expect.images:
        result = host.run(f"sudo docker image inspect --format '{{{{.Id}}}}' {ref}")
        assert result.rc == 0, f"the engine does not list {ref}: {result.stderr.strip()}"
        if image_id:
            assert result.stdout.strip() == image_id, \
                f"{ref} is {result.stdout.strip()}, expected {image_id}"


# trove/common/cfg.py: the default [<manager>] docker_image
DOCKER_IMAGES = {"mysql": "mysql", "mariadb": "mariadb", "postgresql": "postgres"}


def test_datastore_image_check_ran(host, expect):
    """trove-datastore-image ran (alongside the agent), and its one line names the
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
    # it told once the preloaded images were loaded (After=); the agent does
    # not wait for it
    shown = {unit: int(host.check_output(
        f"systemctl show {unit} -p ActiveEnterTimestampMonotonic --value"))
        for unit in ("trove-datastore-image", "trove-preload-images")}
    assert shown["trove-datastore-image"] > 0, f"trove-datastore-image never finished: {shown}"
    if shown["trove-preload-images"]:
        assert shown["trove-preload-images"] <= shown["trove-datastore-image"], \
            f"trove-datastore-image told before trove-preload-images finished: {shown}"


def test_certificate_hook_ran(host, expect):
    if not expect.cert_hook:
        pytest.skip("no certificate hook in this image")
    state = host.run("systemctl is-active trove-certs").stdout.strip()
    said = host.run("sudo journalctl -b -u trove-certs --no-pager -o cat").stdout
    assert state == "active", f"trove-certs.service is {state}: {said[-600:]}"
    if expect.cert_user_hook:
        assert "running the user hook /usr/local/lib/trove-certs/user-hook" in said, \
            f"the profile's user hook did not run: {said[-600:]}"
    # nothing delivered at this boot: the agent starts as configured
    assert "no certificates delivered, installed or kept" in said, said[-600:]


def test_guest_agent_active(host, expect):
    AGENT_UNIT = expect.paths.agent_unit
    if expect.agent_install == "none":
        pytest.skip("agentless image")
    shown = dict(line.split("=", 1) for line in host.check_output(
        f"systemctl show {AGENT_UNIT} -p ActiveState -p NRestarts").splitlines())
    journal = host.run(f"sudo journalctl -u {AGENT_UNIT} --no-pager -n 15").stdout[-800:]
    assert shown["ActiveState"] == "active", f"{AGENT_UNIT} is {shown['ActiveState']}: {journal}"
    assert shown["NRestarts"] == "0", \
        f"{AGENT_UNIT} restarted {shown['NRestarts']} time(s): {journal}"


def test_contract_rpc_ping(host, expect, booted):
    AGENT_UNIT = expect.paths.agent_unit
    if not booted["contract"]:
        pytest.skip("contract test not asked for (--contract)")
    if expect.agent_install == "none":
        pytest.skip("agentless image")
    from trove_image_builder.vm.rabbit import wait_for_rpc
    try:
        answer, waited = wait_for_rpc(booted["broker"].url, booted["guest_id"], AGENT_DEADLINE,
                                      rpc_key=booted["rpc_key"])
    except Exception as exc:
        journal = host.run(f"sudo journalctl -u {AGENT_UNIT} --no-pager -n 20").stdout
        raise AssertionError(f"{exc}; agent journal: {journal[-800:]}") from exc
    assert answer is True, f"rpc_ping answered {answer!r}"
    booted["agent_answered"] = True


def test_contract_prepare(host, expect, booted):
    """Trove's prepare (vm.controller plays the taskmanager and the
    conductor): the agent mounts the volume, runs the preloaded datastore
    image, reports 'healthy'; then a database and a user made through the
    agent answer a query from the host."""
    AGENT_UNIT = expect.paths.agent_unit
    if not booted.get("prepare"):
        pytest.skip("prepare not asked for (--prepare)")
    if not booted.get("agent_answered"):
        pytest.fail("no prepare: the agent did not answer rpc_ping (test_contract_rpc_ping)")
    from trove_image_builder.plumbing import log
    from trove_image_builder.vm.controller import CONTAINER, prove_prepare
    guest = booted["guest"]
    try:
        result = prove_prepare(booted["broker"].url, booted["guest_id"], booted["rpc_key"],
                               expect.datastore_manager, expect.datastore_version,
                               guest.forwarded, memory_mb=guest.memory_mb,
                               tenant_id=booted["tenant_id"])
    except Exception as exc:
        # the agent logs to the file its injected configuration names
        conf = configparser.ConfigParser(interpolation=None)
        conf.read_string(booted["files"][expect.paths.agent_conf])
        agent_log = "{log_dir}/{log_file}".format(**conf["DEFAULT"])
        tails = "\n".join(
            f"{command}:\n{host.run(f'sudo {command} 2>&1').stdout.strip()}"
            for command in (f"docker logs --tail 30 {CONTAINER}",
                            f"tail -n 30 {agent_log}",
                            f"journalctl -u {AGENT_UNIT} --no-pager -n 10"))
        log.info(tails)
        raise AssertionError(f"{getattr(exc, 'message', exc)}\n{tails}") from exc
    booted["seconds"]["prepare_to_healthy"] = result.prepare_to_healthy
    booted["seconds"]["prepare_to_query"] = result.prepare_to_query
    # the prepare was sent after the checks above, not at power-on as
    # Trove's taskmanager would: this includes their time
    booted["seconds"]["power_on_to_healthy"] = round(result.healthy_at - guest.powered_on, 1)
