"""Offline checks: the image mounted read-only, nothing booted."""
import json
from pathlib import Path

import pytest


KEY_SEARCH = "/etc /root /home /var/lib /srv /usr/local /opt"
CERT_HOOK = "/usr/local/sbin/trove-certs"
USER_HOOK = "/usr/local/lib/trove-certs/user-hook"
# where the hook puts certificates at boot; empty in any image
SYSTEM_CA_FOLDERS = ("/usr/local/share/ca-certificates", "/etc/pki/ca-trust/source/anchors")
# the in-image paths come from the image's own contract (expect.paths)
TROVE_DIRS = ("injected", "certs", "state", "log")
# The network stack cloud-init writes the instance's network for, by OS (the
# trove-guest element installs it): Debian's ifupdown (cloud-init's 'eni'
# renderer), Ubuntu's netplan (its 'netplan' renderer, for systemd-networkd)
# with systemd-resolved for the DNS servers DHCP gives.
NETWORK_PACKAGES = {"debian": ("ifupdown",), "ubuntu": ("netplan.io", "systemd-resolved")}


def test_os_release(host, expect):
    info = dict(line.split("=", 1) for line in host.file("/etc/os-release")
                .content_string.splitlines() if "=" in line)
    found = (info.get("ID", "").strip('"'), info.get("VERSION_CODENAME", "").strip('"'))
    assert found == (expect.distro, expect.release), f"found os-release {found}"


def test_datastore_package_installed(host, expect):
    if expect.datastore_runtime != "package":
        pytest.skip("no datastore from OS packages in this image")
    pkg = host.package(expect.datastore_package)
    assert pkg.is_installed, f"package {expect.datastore_package} is not installed"
    if expect.datastore_version:
        upstream = pkg.version.split(":", 1)[-1]
        assert upstream.startswith(expect.datastore_version), \
            f"{expect.datastore_package} is {pkg.version}, expected {expect.datastore_version}"


def test_datastore_service_enabled(host, expect):
    if expect.datastore_runtime != "package":
        pytest.skip("no datastore service from OS packages in this image")
    assert host.service(expect.datastore_service).is_enabled, \
        f"service {expect.datastore_service} is not enabled"


def test_container_engine(host, expect):
    if expect.datastore_runtime != "container":
        pytest.skip("no container runtime in this image")
    assert host.package(expect.engine_package).is_installed, \
        f"the container engine {expect.engine_package} is not installed"
    assert host.service("docker").is_enabled, "docker.service is not enabled"
    # the engine loads its AppArmor profile for every unprivileged container
    # (Trove runs PostgreSQL so) with apparmor_parser, or refuses to run it
    assert host.file("/sbin/apparmor_parser").exists or \
        host.file("/usr/sbin/apparmor_parser").exists, \
        "apparmor_parser is missing: the engine cannot start an unprivileged container"
    groups = host.user(expect.guest_user).groups
    assert "docker" in groups, f"{expect.guest_user} is not in the docker group: {groups}"
    if expect.agent_install != "none":
        # the agent's network plugin, socket-activated, as upstream images have it
        assert host.service("docker-hostnic.socket").is_enabled, \
            "docker-hostnic.socket (the agent's network plugin) is not enabled"
        assert host.file(f"{expect.paths.agent_venv}/bin/trove-docker-plugin").exists, \
            "the agent's trove-docker-plugin is missing"


def test_no_server_package_on_host(host, expect):
    if expect.datastore_runtime != "container":
        pytest.skip("the datastore comes from OS packages in this image")
    assert not host.package(expect.server_package).is_installed, \
        f"{expect.server_package} is installed on the host OS of a container-runtime image"


def test_preloaded_images(host, expect):
    if not expect.images:
        pytest.skip("no preloaded container images in this image")
    listing = host.file(f"{expect.paths.images}/images.list")
    assert listing.exists, f"no {listing.path}"
    held = {ln.split()[0]: ln.split()[1:] for ln in listing.content_string.splitlines()
            if ln.strip()}
    for ref, image_id in expect.images:
        assert ref in held, f"{ref} is not preloaded (found: {sorted(held)})"
        archive = f"{expect.paths.images}/{held[ref][0]}"
        entries = json.loads(host.check_output(f"tar -xOf {archive} manifest.json"))
        found = "sha256:" + entries[0]["Config"].rsplit("/", 1)[-1].removesuffix(".json")
        if image_id:
            assert found == image_id, f"{ref}: the archive holds {found}, expected {image_id}"
    assert host.service("trove-preload-images").is_enabled, \
        "trove-preload-images.service is not enabled"


def test_guest_agent_virtualenv(host, expect):
    AGENT_VENV = expect.paths.agent_venv
    entry = host.file(f"{AGENT_VENV}/bin/trove-guestagent")
    if expect.agent_install == "none":
        assert not entry.exists, f"agentless image has {entry.path}"
        return
    assert entry.exists, f"{entry.path} is missing"
    assert entry.mode & 0o111, f"{entry.path} is not executable (mode {oct(entry.mode)})"
    # Run the venv's own Python inside the image: it must import the agent.
    cmd = host.run(f"{AGENT_VENV}/bin/python -c 'import importlib.metadata as m, "
                   "trove.cmd.guest; print(m.version(\"trove\"))'")
    assert cmd.rc == 0, f"the agent does not import in the image: {cmd.stderr.strip()[-300:]}"
    if expect.agent_version:
        assert cmd.stdout.strip() == expect.agent_version, \
            f"guest agent is {cmd.stdout.strip()}, expected {expect.agent_version}"


# Run in the image with the agent's python: every module the agent can load
# imports (trove/cmd/guest.py, every module of trove.guestagent, whose
# managers it loads by name, oslo.messaging's rabbit driver); prints one
# "module: error" line for each that does not. One failure is the read-only
# image's, not the venv's, pruned or not: trove/cmd/network_driver.py writes
# /etc/docker/hostnic.json when imported, after all its imports.
AGENT_IMPORTS = """
import errno, importlib, pkgutil, sys
names = ["trove.cmd.guest", "trove.cmd.network_driver", "trove.guestagent",
         "oslo_messaging._drivers.impl_rabbit", "kombu.transport.pyamqp"]
import trove.guestagent
names += [m.name for m in pkgutil.walk_packages(trove.guestagent.__path__,
                                                 "trove.guestagent.")]
for name in names:
    try:
        importlib.import_module(name)
    except OSError as exc:
        if exc.errno != errno.EROFS:
            print(f"{name}: {type(exc).__name__}: {exc}")
    except Exception as exc:
        print(f"{name}: {type(exc).__name__}: {exc}")
"""
# Run in the image: the .py files of the agent's venv without bytecode.
NO_BYTECODE = """
import importlib.util, pathlib, sysconfig
site = pathlib.Path(sysconfig.get_paths()["purelib"])
for path in site.rglob("*.py"):
    if not pathlib.Path(importlib.util.cache_from_source(str(path))).exists():
        print(path)
"""


def test_guest_agent_imports(host, expect):
    """A pruned venv (production images) still holds all the agent loads."""
    if expect.agent_install == "none":
        pytest.skip("agentless image")
    cmd = host.run(f"cd / && {expect.paths.agent_venv}/bin/python -c '{AGENT_IMPORTS}'")
    assert cmd.rc == 0, f"the import check did not run: {cmd.stderr.strip()[-300:]}"
    failed = cmd.stdout.strip().splitlines()
    assert not failed, f"{len(failed)} agent modules do not import: " + "; ".join(failed[:20])


def test_guest_agent_bytecode(host, expect):
    """The agent runs as the guest user and cannot write __pycache__ in the
    root-owned venv: every module has its bytecode from the build."""
    if expect.agent_install == "none":
        pytest.skip("agentless image")
    cmd = host.run(f"{expect.paths.agent_venv}/bin/python -c '{NO_BYTECODE}'")
    assert cmd.rc == 0, f"the bytecode check did not run: {cmd.stderr.strip()[-300:]}"
    missing = cmd.stdout.split()
    assert not missing, f"{len(missing)} modules of the agent's venv without bytecode: " \
        f"{missing[:10]}"
    # the build's pip cache was mounted there, never copied; the pruning
    # program is a build tool
    for path in ("/tmp/pip-cache", "/usr/local/lib/guest-agent-build"):
        assert not host.file(path).exists, f"the build left {path} in the image"


def test_production_agent_venv_is_pruned(host, expect):
    """Production images with a released agent: no pip (nothing installs
    into the venv there), and every distribution's metadata still there."""
    if not expect.production or expect.agent_install != "release":
        pytest.skip("only a production image's released agent is pruned")
    venv = expect.paths.agent_venv
    assert not host.file(f"{venv}/bin/pip").exists, f"{venv}/bin/pip in a production image"
    cmd = host.run(f"{venv}/bin/python -c 'import importlib.util as u; "
                   "print(u.find_spec(\"pip\") is None)'")
    assert cmd.stdout.strip() == "True", f"pip is importable in {venv}: {cmd.stderr[-300:]}"
    cmd = host.run(f"{venv}/bin/python -c 'import importlib.metadata as m; "
                   "print(m.version(\"pip\"), m.version(\"python-openstackclient\"))'")
    assert cmd.rc == 0, f"pruned distributions lost their metadata: {cmd.stderr[-300:]}"


def test_guest_agent_unit(host, expect):
    AGENT_UNIT, AGENT_VENV = expect.paths.agent_unit, expect.paths.agent_venv
    unit = host.file(f"/etc/systemd/system/{AGENT_UNIT}")
    if expect.agent_install == "none":
        assert not unit.exists, f"agentless image has {unit.path}"
        return
    assert unit.exists, f"the guest agent unit {unit.path} is missing"
    assert f"{AGENT_VENV}/bin/trove-guestagent --config-dir={expect.paths.injected}" \
        in unit.content_string, f"{unit.path} does not run the agent with --config-dir"
    assert host.service(AGENT_UNIT).is_enabled, f"{AGENT_UNIT} is not enabled"
    user = host.file(f"/etc/systemd/system/{AGENT_UNIT}.d/10-guest-user.conf")
    assert user.exists and f"User={expect.guest_user}" in user.content_string, \
        f"{AGENT_UNIT} does not run as {expect.guest_user}"


@pytest.mark.parametrize("name", TROVE_DIRS)
def test_trove_directories(host, expect, name):
    path = getattr(expect.paths, name)
    folder = host.file(path)
    assert folder.is_directory, f"{path} is missing"
    assert folder.user == expect.guest_user, f"{path} is owned by {folder.user}"


def test_agent_state_folder(host, expect):
    """The agent marks prepare's start and end in its own folder with plain
    writes, as the guest user (trove/guestagent/datastore/service.py,
    BaseDbStatus.GUESTAGENT_DIR); a new image has no marker there (the end
    marker tells the agent prepare is done)."""
    if expect.agent_install == "none":
        pytest.skip("agentless image")
    path = expect.paths.agent_state
    if path is None:
        pytest.skip("the image's manifest predates the agent's state folder in the contract")
    folder = host.file(path)
    assert folder.is_directory, f"{path} is missing: the agent cannot begin a prepare"
    assert folder.user == expect.guest_user and folder.mode & 0o200, \
        f"{path} is owned by {folder.user} (mode {oct(folder.mode)}); " \
        f"the agent writes there as {expect.guest_user}"
    for marker in (".guestagent.prepare.start", ".guestagent.prepare.end"):
        assert not host.file(f"{path}/{marker}").exists, f"a new image has {path}/{marker}"


def test_guest_user_home(host, expect):
    """Modules given at prepare go to ~/modules of the agent's user, written
    without sudo (trove/guestagent/module/module_manager.py, MODULE_BASE_DIR)."""
    if expect.agent_install == "none":
        pytest.skip("agentless image")
    home = host.file(host.user(expect.guest_user).home)
    assert home.is_directory and home.user == expect.guest_user, \
        f"{expect.guest_user}'s home {home.path} is missing or not theirs"


def test_cloud_init_datasources(host):
    found = host.check_output("cat /etc/cloud/cloud.cfg.d/*.cfg")
    lines = [ln for ln in found.splitlines() if ln.startswith("datasource_list")]
    assert lines, "no datasource_list in /etc/cloud/cloud.cfg.d"
    assert "ConfigDrive" in lines[-1] and "OpenStack" in lines[-1], \
        f"cloud-init datasources: {lines[-1]}"


def test_network_stack(host, expect):
    wanted = NETWORK_PACKAGES.get(expect.distro)
    if wanted is None:
        pytest.skip(f"no network stack known here for {expect.distro}")
    missing = [name for name in wanted if not host.package(name).is_installed]
    assert not missing, f"{expect.distro} {expect.release} without {', '.join(missing)}: " \
        "cloud-init has no network stack to configure"


# What every guest's kernel must bring (as modules or built in): the
# instance's disks and network (virtio), its root file system, the config
# drive Nova attaches (iso9660).
KERNEL_MODULES = ("virtio_blk", "virtio_net", "ext4", "isofs")
# What Docker's default networking needs (a bridge, veth pairs, NAT through
# iptables' nf_tables backend) and its storage driver (overlay): Trove's
# agent runs the datastore container in Docker's bridge mode unless the
# instance has network isolation (trove/guestagent/datastore/mysql_common/
# service.py and postgres/service.py start_db: constants.DOCKER_BRIDGE_MODE).
CONTAINER_KERNEL_MODULES = ("bridge", "veth", "overlay", "br_netfilter", "nf_conntrack",
                            "nf_nat", "nf_tables", "nft_compat", "nft_chain_nat",
                            "xt_MASQUERADE", "xt_addrtype", "xt_conntrack")


def _kernel_modules(host, version: str) -> set:
    """Every module of the kernel, loadable (modules.dep) or built in, by
    its name (foo-bar.ko.xz -> foo_bar)."""
    found = set()
    for listing in ("modules.dep", "modules.builtin"):
        text = host.file(f"/usr/lib/modules/{version}/{listing}").content_string
        for line in text.splitlines():
            path = line.split(":", 1)[0].strip()
            if path:
                found.add(path.rsplit("/", 1)[-1].split(".ko", 1)[0].replace("-", "_"))
    return found


def test_one_kernel_with_what_a_guest_needs(host, expect):
    versions = host.check_output("ls -1 /usr/lib/modules").split()
    images = host.check_output("ls -1 /boot").split()
    booted = sorted(name for name in images if name.startswith("vmlinuz-"))
    assert len(versions) == 1 and len(booted) == 1, \
        f"one kernel expected: modules for {versions}, {booted} in /boot"
    have = _kernel_modules(host, versions[0])
    wanted = KERNEL_MODULES + (CONTAINER_KERNEL_MODULES
                               if expect.datastore_runtime == "container" else ())
    missing = [name for name in wanted if name not in have]
    assert not missing, f"kernel {versions[0]} lacks {', '.join(missing)}"


def test_no_private_keys(host, expect):
    if not expect.production:
        pytest.skip("development image")
    # grep: 0 found, 1 none found; anything else is an error, not a pass
    grep = host.run_expect([0, 1], "grep -rIl --exclude-dir=site-packages "
                           f"-e '-----BEGIN [A-Z ]*PRIVATE KEY-----' {KEY_SEARCH}")
    found = grep.stdout.split()
    found += [f"/etc/ssh/{n}" for n in host.check_output("ls -A /etc/ssh").split()
              if n.startswith("ssh_host_") and n.endswith("_key")]
    assert not found, f"private key material in a production image: {found}"


def test_no_authorized_keys(host, expect):
    if not expect.production:
        pytest.skip("development image")
    found = host.check_output("find /root /home -name 'authorized_keys*'").split()
    assert not found, f"authorized_keys in a production image: {found}"


def test_no_passwords(host, expect):
    if not expect.production:
        pytest.skip("development image")
    usable = []
    for line in host.file("/etc/shadow").content_string.splitlines():
        name, pw = line.split(":")[:2]
        if pw and not pw.startswith(("!", "*")):
            usable.append(name)
    assert not usable, f"users with a password in a production image: {usable}"


def test_no_trove_certificates(host, expect):
    folders = (expect.paths.certs, str(Path(expect.paths.cert_staging).parent),
               *SYSTEM_CA_FOLDERS)
    found = host.check_output(f"find {' '.join(folders)} -type f 2>/dev/null || true")
    # PEM anywhere Trove's files live (the system CA bundle is not among them)
    grep = host.run_expect([0, 1, 2], "grep -rIl -e '-----BEGIN [A-Z ]*CERTIFICATE-----' "
                           "-e '-----BEGIN [A-Z ]*PRIVATE KEY-----' "
                           f"{expect.paths.conf} {expect.paths.state} "
                           f"{Path(expect.paths.cert_staging).parent} /etc/default")
    found = sorted(set(found.split() + grep.stdout.split()))
    assert not found, f"certificates or keys baked into the image: {found}"


def test_certificate_hook(host, expect):
    AGENT_UNIT, CERT_STAGING = expect.paths.agent_unit, expect.paths.cert_staging
    script = host.file(CERT_HOOK)
    if not expect.cert_hook:
        assert not host.file("/etc/systemd/system/trove-certs.service").exists, \
            "the image has the certificate hook, the profile does not ask for it"
        return
    assert script.exists and script.mode & 0o111, f"{CERT_HOOK} is missing or not executable"
    assert host.service("trove-certs.service").is_enabled, "trove-certs.service is not enabled"
    assert host.service("trove-certs-sync.timer").is_enabled, \
        "trove-certs-sync.timer is not enabled"
    staging = host.file(CERT_STAGING)
    assert staging.is_directory and staging.user == "root" and staging.mode == 0o700, \
        f"the staging folder {CERT_STAGING} is not a root-only folder"
    if expect.agent_install != "none":
        dropin = host.file(f"/etc/systemd/system/{AGENT_UNIT}.d/30-trove-certs.conf")
        assert dropin.exists and "Requires=trove-certs.service" in dropin.content_string, \
            f"{AGENT_UNIT} does not require trove-certs.service"
    settings = host.file("/etc/default/trove-certs").content_string
    user_hook = host.file(USER_HOOK)
    if expect.cert_user_hook:
        assert user_hook.exists and user_hook.mode & 0o111, f"{USER_HOOK} is missing"
        assert f"TROVE_CERTS_USER_HOOK={USER_HOOK}" in settings, \
            f"/etc/default/trove-certs does not name the user hook {USER_HOOK}"
    else:
        assert not user_hook.exists, f"{USER_HOOK} in an image whose profile names none"
    # the hook's own check runs in the image: it refuses an empty set
    check = host.run(f"{CERT_HOOK} check {CERT_STAGING}")
    assert check.rc == 1 and "no ca.crt" in check.stderr, \
        f"{CERT_HOOK} check does not run in the image: {check.stderr.strip()[-300:]}"


def test_dev_marker_and_key(host, expect):
    marker = host.file(expect.paths.dev_marker)
    if expect.production:
        assert not marker.exists, "a production image carries the development marker"
        return
    assert marker.exists, f"development image without {marker.path}"
    keys = host.file(f"/home/{expect.guest_user}/.ssh/authorized_keys")
    assert keys.exists, f"no authorized_keys for {expect.guest_user}"
    if expect.dev_public_key:
        assert expect.dev_public_key in keys.content_string, \
            "the build's ssh public key is not in authorized_keys"
