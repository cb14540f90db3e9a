"""The virt-customize backend for real: the same profile as the DIB build,
the same checks, comparable manifests."""
import json

import pytest

from tests.helpers.cli import cli

pytestmark = pytest.mark.integration

KEY_UNITS = ("guest-agent.service", "docker.service", "containerd.service",
             "docker-hostnic.socket", "ssh.service", "cloud-init.service",
             "cloud-config.service", "cloud-final.service")


def test_both_backends_give_the_same_guest(prod_mariadb, prod_mariadb_vc):
    dib, vc = prod_mariadb.manifest, prod_mariadb_vc.manifest
    assert vc["backend"] == "virt-customize" and dib["backend"] == "dib"
    assert vc["guest_agent"]["version"] == dib["guest_agent"]["version"] == "26.0.0"
    assert vc["datastore"]["name"] == dib["datastore"]["name"]
    assert vc["datastore"]["package_version"] == dib["datastore"]["package_version"]
    for unit in KEY_UNITS:
        assert (unit in vc["services_enabled"]) == (unit in dib["services_enabled"]), unit
    only_dib = sorted(set(dib["services_enabled"]) - set(vc["services_enabled"]))
    only_vc = sorted(set(vc["services_enabled"]) - set(dib["services_enabled"]))
    print(f"enabled only with dib: {only_dib}; only with virt-customize: {only_vc}")
    print(f"build seconds: dib {dib['timings']['total']}, "
          f"virt-customize {vc['timings']['total']}")
    assert not only_dib and not only_vc


def test_offline_verify_virt_customize_image(prod_mariadb_vc):
    proc = cli("verify", str(prod_mariadb_vc.path))
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["failed"] == []


def test_root_d_element_is_refused(tmp_path):
    element = tmp_path / "elements" / "needs-root-d"
    (element / "root.d").mkdir(parents=True)
    script = element / "root.d" / "10-something"
    script.write_text("#!/bin/bash\nset -eu\nset -o pipefail\ntrue\n")
    script.chmod(0o755)
    (element / "README.rst").write_text("needs-root-d\n============\nA root.d element.\n")
    profile = tmp_path / "p.yaml"
    profile.write_text("extends: prod-mariadb\nname: p\nelements: [needs-root-d]\n")
    proc = cli("build", str(profile), "--backend", "virt-customize", "-o",
               str(tmp_path / "p.qcow2"), "--elements-path", str(tmp_path / "elements"))
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == (
        "Error: element needs-root-d: phase root.d cannot run on the virt-customize backend "
        "(it needs diskimage-builder's build root); use --backend dib")
    assert not (tmp_path / "p.qcow2").exists()
