"""The virt-customize backend for real. CI builds each real image once: DIB
makes prod-mariadb, virt-customize makes prod-postgresql; both pass the same
checks (offline here; booted with Trove's prepare in test_prepare.py, an
extended test), and
the guests they make share everything but the datastore."""
import json

import pytest

from tests.helpers.cli import cli

pytestmark = pytest.mark.integration

KEY_UNITS = ("guest-agent.service", "docker.service", "containerd.service",
             "docker-hostnic.socket", "ssh.service", "cloud-init.service",
             "cloud-config.service", "cloud-final.service")


def test_both_backends_give_the_same_guest(prod_mariadb, prod_postgresql):
    dib, vc = prod_mariadb.manifest, prod_postgresql.manifest
    assert vc["backend"] == "virt-customize" and dib["backend"] == "dib"
    assert vc["guest_agent"]["version"] == dib["guest_agent"]["version"] == "26.0.0"
    assert vc["guest_agent"]["python_packages"] == dib["guest_agent"]["python_packages"]
    assert vc["os"]["os_release"] == dib["os"]["os_release"]
    # the same engine on the host OS; the datastore in its own container image
    assert vc["datastore"]["package_version"] == dib["datastore"]["package_version"]
    assert vc["datastore"]["image"] == {"ref": "postgres:17", "source": "built"}
    for unit in KEY_UNITS:
        assert (unit in vc["services_enabled"]) == (unit in dib["services_enabled"]), unit
    only_dib = sorted(set(dib["services_enabled"]) - set(vc["services_enabled"]))
    only_vc = sorted(set(vc["services_enabled"]) - set(dib["services_enabled"]))
    print(f"enabled only with dib: {only_dib}; only with virt-customize: {only_vc}")
    print(f"build seconds: dib {dib['timings']['total']}, "
          f"virt-customize {vc['timings']['total']}")
    assert not only_dib and not only_vc


def test_offline_verify_virt_customize_image(prod_postgresql):
    proc = cli("verify", str(prod_postgresql.path))
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["failed"] == []
    # the operator's certificate hook went in (--set certificates.user_hook)
    assert prod_postgresql.manifest["certificates"]["user_hook"] is True
    assert f"PASS {prod_postgresql.path.name}: offline::test_certificate_hook" in proc.stderr


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
