"""Real builds with diskimage-builder, checked from the outside."""
import hashlib
import json
import re
import os
from pathlib import Path
import signal
import subprocess
import sys
import time

import pytest

from trove_image_builder.build.cache import LayerCache
from trove_image_builder.plumbing import imagefs
from trove_image_builder.plumbing.cleanup import loops_backed_by

from tests.helpers.cli import REPO, cli

pytestmark = pytest.mark.integration


def test_prod_mariadb_image_is_qcow2_with_checksum(prod_mariadb):
    info = json.loads(subprocess.run(
        ["qemu-img", "info", "--output=json", str(prod_mariadb.path)],
        capture_output=True, text=True, check=True).stdout)
    assert info["format"] == "qcow2"
    assert info["virtual-size"] == 4 * 1024 ** 3
    line = prod_mariadb.path.with_name(prod_mariadb.path.name + ".sha256").read_text()
    digest, name = line.split()
    assert name == prod_mariadb.path.name
    assert hashlib.sha256(prod_mariadb.path.read_bytes()).hexdigest() == digest
    # the command's own result line on stdout
    result = json.loads(prod_mariadb.proc.stdout)
    assert result["sha256"] == digest


def test_manifest_lists_what_the_image_holds(prod_mariadb):
    m = prod_mariadb.manifest
    assert m["profile"]["name"] == "prod-mariadb"
    assert m["profile"]["digest"].startswith("sha256:")
    assert m["guest_agent"]["version"] == "26.0.0"
    assert m["guest_agent"]["venv"] == "/opt/guest-agent-venv"
    assert "trove" in m["guest_agent"]["python_packages"]
    # container runtime: the engine on the host OS, the server not
    assert m["datastore"]["runtime"] == "container"
    assert m["datastore"]["package"] == "docker.io"
    assert "docker.io" in m["packages"]
    assert "mariadb-server" not in m["packages"]
    assert "guest-agent.service" in m["services_enabled"]
    assert "docker.service" in m["services_enabled"]
    assert m["os"]["os_release"]["VERSION_CODENAME"] == "trixie"
    assert m["tools"]["diskimage-builder"]
    assert m["elements"][:2] == ["debian-minimal", "vm"]
    assert m["timings"]["total"] > 0
    assert m["image"]["size_bytes"] == prod_mariadb.path.stat().st_size


def test_image_file_system_holds_agent_and_unit(prod_mariadb):
    before = hashlib.sha256(prod_mariadb.path.read_bytes()).hexdigest()
    with imagefs.mounted(prod_mariadb.path) as root:
        agent = root / "opt/guest-agent-venv/bin/trove-guestagent"
        assert agent.is_file() and os.access(agent, os.X_OK)
        unit = (root / "etc/systemd/system/guest-agent.service").read_text()
        assert "trove-guestagent --config-dir=/etc/trove/conf.d" in unit
        dropin = root / "etc/systemd/system/guest-agent.service.d/10-guest-user.conf"
        assert "User=trove" in dropin.read_text()
        assert (root / "etc/systemd/system/multi-user.target.wants/guest-agent.service"
                ).is_symlink()
        assert (root / "etc/trove/conf.d").is_dir()
        # production: no keys or passwords
        assert not list((root / "etc/ssh").glob("ssh_host_*key"))
        shadow = {ln.split(":")[0]: ln.split(":")[1]
                  for ln in (root / "etc/shadow").read_text().splitlines()}
        assert shadow["trove"].startswith(("!", "*"))
        assert shadow["root"].startswith(("!", "*"))
        assert not (root / "home/trove/.ssh/authorized_keys").exists()
        assert not (root / "tmp/in_target.d/build-ca-bundle.pem").exists()
    after = hashlib.sha256(prod_mariadb.path.read_bytes()).hexdigest()
    assert before == after, "mounting must not change the image"


def test_manifest_sizes_match_the_image(prod_mariadb):
    sizes = prod_mariadb.manifest["sizes"]
    assert sizes["image_bytes"] == prod_mariadb.path.stat().st_size
    fs = sizes["filesystem"]
    venv = sizes["agent_venv"]
    assert venv["path"] == "/opt/guest-agent-venv"
    assert 50 * 2 ** 20 < venv["total_bytes"] < fs["files_bytes"] <= fs["size_bytes"]
    assert "trove" in [e["name"] for e in venv["top"]]
    packages = sizes["packages"]
    assert packages["count"] == len(prod_mariadb.manifest["packages"])
    assert packages["total_bytes"] > 0
    assert "docker.io" in [p["name"] for p in packages["top"]]
    assert sizes["kernel"]["total_bytes"] > 0
    assert any(f["name"].startswith("boot/vmlinuz-") for f in sizes["kernel"]["files"])
    images = sizes["preloaded_images"]
    assert images["total_bytes"] == sum(f["bytes"] for f in images["files"])
    archives = [f for f in images["files"] if f["name"].endswith(".tar")]
    assert len(archives) == len(prod_mariadb.manifest["datastore"]["images"])
    preloaded = prod_mariadb.manifest["datastore"]["images"]
    for used, size in zip(sorted(a["bytes"] for a in archives),
                          sorted(i["size_bytes"] for i in preloaded)):
        assert size <= used < size + 2 ** 20        # in whole blocks
    with imagefs.mounted(prod_mariadb.path) as root:
        # the walk counts as du does
        du = subprocess.run(["du", "-sxB1", str(root / "opt/guest-agent-venv")],
                            capture_output=True, text=True, check=True).stdout
        assert int(du.split()[0]) == venv["total_bytes"]
    proc = cli("inspect", str(prod_mariadb.path), "--sizes")
    assert proc.returncode == 0, proc.stderr
    assert re.search(r"^  docker\.io +[\d,.]+ MiB$", proc.stdout, re.M), proc.stdout
    assert re.search(r"^agent venv +[\d,.]+ MiB  /opt/guest-agent-venv", proc.stdout, re.M)


def _no_leftovers(folder: Path):
    assert loops_backed_by(folder) == []
    mounts = Path("/proc/self/mountinfo").read_text()
    assert str(folder) not in mounts
    assert not any(p.name.startswith(".") for p in folder.iterdir()), list(folder.iterdir())


@pytest.mark.parametrize("how,mark", [
    # in DIB's own run (one run: the cached layers are not used)
    (["--no-layers"], "/install.d/"),
    # in the chroot of the agent layer (another agent version: the base is reused)
    (["--set", "guest_agent.version=25.0.0"], "layer: install.d/60-guest-agent"),
], ids=["dib", "chroot-layer"])
def test_interrupted_build_leaves_nothing(tmp_path, prod_mariadb, how, mark):
    # prod_mariadb first: the bootstrap cache is warm, so mounts exist early.
    out = tmp_path / "interrupted.qcow2"
    log = tmp_path / "interrupted.qcow2.log"
    # its mounts go under tmp_path (TMPDIR), apart from other builds' running now
    proc = subprocess.Popen([sys.executable, "-m", "trove_image_builder.cli", "build",
                             "prod-mariadb", "-o", str(out), *how], cwd=REPO, text=True,
                            env=dict(os.environ, TMPDIR=str(tmp_path)),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        if log.exists() and mark in log.read_text(errors="replace"):
            break
        assert proc.poll() is None, proc.communicate()
        time.sleep(1)
    else:
        pytest.fail("the build never reached install.d")
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 130, stderr
    assert "Error: interrupted" in stderr
    assert "Traceback" not in stderr
    assert not out.exists()
    _no_leftovers(tmp_path)
    assert not list(tmp_path.glob("tib-mount-*")), list(tmp_path.glob("tib-mount-*"))
    # no half-written layer of this build in the cache (other builds may be at work)
    staged = list(LayerCache().root.glob(f".new-*-{proc.pid}.*"))
    assert not staged, staged


def test_failed_build_says_why_and_leaves_nothing(tmp_path, prod_mariadb):
    out = tmp_path / "failed.qcow2"
    proc = cli("build", "prod-mariadb", "-o", str(out),
               "--set", "packages=[no-such-package-tib]")
    assert proc.returncode == 1, proc.stderr
    assert re.search(rf"Error: disk-image-create failed with exit code \d+; full log: "
                     rf"{re.escape(str(out))}\.log", proc.stderr), proc.stderr
    assert "no-such-package-tib" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not out.exists()
    _no_leftovers(tmp_path)


def test_package_runtime_image_holds_the_server(mariadb_package):
    m = mariadb_package.manifest
    assert m["datastore"]["package"] == "mariadb-server"
    assert m["packages"]["mariadb-server"] == m["datastore"]["package_version"]
    assert m["datastore"]["upstream_version"].startswith("10.11")
    assert "mariadb.service" in m["services_enabled"]
    assert m["guest_agent"]["install"] == "none" and m["guest_agent"]["venv"] is None
    assert "docker.io" not in m["packages"]
    with imagefs.mounted(mariadb_package.path) as root:
        assert (root / "usr/sbin/mariadbd").is_file()
        assert not (root / "opt/guest-agent-venv").exists()
