"""verify --prepare on the real production images: Trove's own prepare,
sent as its taskmanager does (vm.controller, which also plays the
conductor); the agent mounts the volume, runs the preloaded datastore image
with no registry in reach, reports 'healthy'; a database and a user made
through the agent answer a query from the host. The timings are printed."""
import json

import pytest

from trove_image_builder.contract import expectations

from tests.helpers.cli import cli

pytestmark = pytest.mark.integration

PREPARE_CHECKS = ("booted::test_container_engine_active",
                  "booted::test_preloaded_images_listed_without_a_pull",
                  "booted::test_guest_agent_active",
                  "booted::test_contract_rpc_ping",
                  "booted::test_contract_prepare")


def _prepared(built) -> dict:
    proc = cli("verify", str(built.path), "--prepare", timeout=3600)
    assert proc.returncode == 0, proc.stderr[-6000:]
    name = built.path.name
    for check in PREPARE_CHECKS:
        assert f"PASS {name}: {check}" in proc.stderr, proc.stderr[-6000:]
    seconds = json.loads(proc.stdout)["seconds"]
    assert 0 < seconds["prepare_to_healthy"] <= seconds["prepare_to_query"]
    assert (f"prepare: healthy {seconds['prepare_to_healthy']} s after prepare, "
            f"a query answered after {seconds['prepare_to_query']} s") in proc.stderr
    print(f"{name}: ssh after {seconds['boot']} s; prepare to healthy "
          f"{seconds['prepare_to_healthy']} s, to the query answered "
          f"{seconds['prepare_to_query']} s")
    return seconds


def test_prepare_mariadb(prod_mariadb):
    _prepared(prod_mariadb)


def test_prepare_postgresql(prod_postgresql):
    _prepared(prod_postgresql)


def test_prepare_of_a_tag_the_image_does_not_hold_fails_in_one_line(prod_mariadb, tmp_path):
    """The manifest says 99.9: Trove would inject that version and prepare
    it; the agent finds no mariadb:99.9 and cannot pull one."""
    image = tmp_path / prod_mariadb.path.name
    image.symlink_to(prod_mariadb.path)
    manifest = prod_mariadb.manifest
    manifest["contract"]["datastore_version"] = "99.9"
    expectations.manifest_path(image).write_text(json.dumps(manifest))
    proc = cli("verify", str(image), "--prepare", timeout=3600)
    assert proc.returncode == 1, proc.stderr[-6000:]
    assert "PASS prod-mariadb.qcow2: booted::test_contract_rpc_ping" in proc.stderr
    (line,) = [line for line in proc.stderr.splitlines()
               if line.startswith("FAIL prod-mariadb.qcow2: booted::test_contract_prepare: ")]
    # Trove's agent: "Failed to start mysql" (trove/guestagent/datastore/
    # mysql_common/service.py start_db); the docker error is in its journal
    assert line.startswith(
        "FAIL prod-mariadb.qcow2: booted::test_contract_prepare: prepare failed; "
        "the last status the guest reported: 'failed to spawn'; notify_exc_info: "), line
    # the tails that help, printed with the error: the container's log
    # (there is no container), the agent's log naming the tag, its journal
    tails = proc.stderr.split("docker logs --tail 30 database:", 1)[1]
    assert "tail -n 30 /var/log/trove/trove-guestagent.log:" in tails
    assert "mariadb:99.9" in tails, tails[-3000:]
