"""verify --prepare on the real production images: Trove's own prepare,
sent as its taskmanager does (vm.controller, which also plays the
conductor); the agent mounts the volume, runs the preloaded datastore image
with no registry in reach, reports 'healthy'; a database and a user made
through the agent answer a query from the host. The timings are printed."""
import json
import xml.etree.ElementTree as ET

import pytest

from tests.helpers.cli import cli

pytestmark = pytest.mark.integration

PREPARE_CHECKS = ("booted::test_cloud_init_finished_without_errors",
                  "booted::test_trove_files_injected",
                  "booted::test_certificate_hook_ran",
                  "booted::test_datastore_image_check_ran",
                  "booted::test_container_engine_active",
                  "booted::test_preloaded_images_listed_without_a_pull",
                  "booted::test_guest_agent_active",
                  "booted::test_contract_rpc_ping",
                  "booted::test_contract_prepare")


def _prepared(built, *options) -> dict:
    proc = cli("verify", str(built.path), "--prepare", *options, timeout=3600)
    assert proc.returncode == 0, proc.stderr[-6000:]
    name = built.path.name
    for check in PREPARE_CHECKS:
        assert f"PASS {name}: {check}" in proc.stderr, proc.stderr[-6000:]
    seconds = json.loads(proc.stdout)["seconds"]
    assert 0 < seconds["prepare_to_healthy"] <= seconds["prepare_to_query"]
    assert seconds["power_on_to_healthy"] > seconds["boot"] + seconds["prepare_to_healthy"]
    assert (f"prepare: healthy {seconds['prepare_to_healthy']} s after prepare, "
            f"a query answered after {seconds['prepare_to_query']} s") in proc.stderr
    print(f"{name}: ssh after {seconds['boot']} s, healthy {seconds['power_on_to_healthy']} s "
          f"after power-on; prepare to healthy "
          f"{seconds['prepare_to_healthy']} s, to the query answered "
          f"{seconds['prepare_to_query']} s")
    return seconds


def test_prepare_mariadb(prod_mariadb, tmp_path):
    junit = tmp_path / "booted.xml"
    _prepared(prod_mariadb, "--junit", str(junit))
    cases = {case.get("name"): case for case in ET.parse(junit).getroot().iter("testcase")}
    assert cases["test_contract_prepare"].find("failure") is None
    assert cases["test_contract_rpc_ping"].find("failure") is None


# CI's time goes to one prepare per OS (prod-mariadb on trixie,
# prod-mysql-noble on noble); PostgreSQL's runs with
# pytest -m extended tests/integration/test_prepare.py
@pytest.mark.extended
def test_prepare_postgresql(prod_postgresql):
    _prepared(prod_postgresql)


def test_prepare_mysql_on_ubuntu_noble(prod_mysql_noble):
    assert prod_mysql_noble.manifest["os"]["os_release"]["VERSION_CODENAME"] == "noble"
    _prepared(prod_mysql_noble)
