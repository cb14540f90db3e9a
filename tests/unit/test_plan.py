"""From a profile to a build plan, and from a plan to disk-image-create."""
from pathlib import Path

import pytest

from trove_image_builder.plumbing import host
from trove_image_builder import profile as profiles
from trove_image_builder.build.backends.dib import DibBackend
from trove_image_builder.errors import InputError
from trove_image_builder.build.plan import (DEV_KEY_PLACEHOLDER, check_inputs, default_output,
                                            dev_key_path, make_plan)

BASE_ELEMENTS = ("debian-minimal", "vm", "block-device-mbr", "trove-guest")
CONTAINER = BASE_ELEMENTS + ("container-engine",)


@pytest.fixture
def plan_of(known):
    def _plan(ref, sets=(), output=None, extra_paths=()):
        prof = profiles.load(str(ref), sets, known_elements=known)
        return make_plan(prof, output, known, extra_paths)
    return _plan


@pytest.fixture
def trove_checkout(tmp_path):
    src = tmp_path / "trove"
    src.mkdir()
    (src / "setup.cfg").write_text("[metadata]\nname = trove\n")
    return src


# --------------------------------------------------------------------------
# make_plan

def test_prod_mariadb_elements_in_order(plan_of):
    assert plan_of("prod-mariadb").elements == \
        CONTAINER + ("mariadb", "guest-agent", "trove-certs")


def test_package_runtime_needs_no_engine(plan_of):
    assert plan_of("mariadb-package").elements == BASE_ELEMENTS + ("mariadb",)


def test_prod_postgresql_elements_in_order(plan_of):
    assert plan_of("prod-postgresql").elements == \
        CONTAINER + ("postgresql", "guest-agent", "trove-certs")


def test_prod_mariadb_env(plan_of):
    env = plan_of("prod-mariadb").env
    assert env["DIB_RELEASE"] == "trixie"
    assert env["TROVE_GUEST_AGENT_VERSION"] == "26.0.0"
    assert env["TROVE_GUEST_AGENT_INSTALL"] == "release"
    assert env["TROVE_DATASTORE_VERSION"] == "11.8"
    assert env["TROVE_DATASTORE_RUNTIME"] == "container"
    assert env["TROVE_GUEST_USER"] == "trove"
    assert env["DIB_CLOUD_INIT_DATASOURCES"] == "ConfigDrive, OpenStack"
    assert env["DIB_DISTRIBUTION_MIRROR"] == "http://deb.debian.org/debian"
    assert env["DIB_DEBIAN_SECURITY_MIRROR"] == "http://deb.debian.org/debian-security"
    # the profile's own env: section
    assert env["DIB_DEBIAN_COMPONENTS"] == "main"
    # nothing of a development image
    assert "TROVE_DEV_SSH_PUBKEY" not in env
    assert "TROVE_GUEST_AGENT_SOURCE" not in env
    assert all(isinstance(v, str) for v in env.values())


def test_prod_plan_has_no_dev_key_and_default_output(plan_of):
    plan = plan_of("prod-mariadb")
    assert plan.dev_key is None
    assert plan.output == Path("out/prod-mariadb.qcow2")
    assert plan.output == default_output(plan.profile)
    assert plan.arch == "amd64"


def test_dev_profile_adds_dev_access_and_a_key_next_to_the_output(
        plan_of, trove_checkout,
        tmp_path):
    out = tmp_path / "images" / "dev.qcow2"
    plan = plan_of("dev-mariadb", [f"trove_source={trove_checkout}"], output=out)
    assert plan.elements == CONTAINER + ("mariadb", "guest-agent", "dev-access")
    assert plan.dev_key == tmp_path / "images" / "dev.id_ed25519"
    assert plan.env["TROVE_DEV_SSH_PUBKEY"] == DEV_KEY_PLACEHOLDER
    assert plan.env["TROVE_GUEST_AGENT_INSTALL"] == "source"
    assert plan.env["TROVE_GUEST_AGENT_SOURCE"] == str(trove_checkout)
    assert "TROVE_GUEST_AGENT_VERSION" not in plan.env


def test_dev_key_with_the_default_output(plan_of):
    plan = plan_of("dev-postgresql")
    assert plan.output == Path("out/dev-postgresql.qcow2")
    assert plan.dev_key == Path("out/dev-postgresql.id_ed25519")


def test_dev_key_path_keeps_dotted_names():
    assert dev_key_path(Path("/x/my.image.v1.qcow2")) == Path("/x/my.image.v1.id_ed25519")


def test_relative_source_is_made_absolute(plan_of, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    plan = plan_of("dev-mariadb", ["trove_source=trove"])
    source = Path(plan.env["TROVE_GUEST_AGENT_SOURCE"])
    assert source.is_absolute()
    assert source == (tmp_path / "trove").resolve()


def test_install_none_drops_the_guest_agent(plan_of):
    plan = plan_of("base-debian")
    assert plan.elements == BASE_ELEMENTS
    assert plan.env["TROVE_GUEST_AGENT_INSTALL"] == "none"
    assert "TROVE_GUEST_AGENT_VERSION" not in plan.env
    assert not any(k.startswith("TROVE_DATASTORE_") for k in plan.env)


def test_install_none_on_a_datastore_profile(plan_of):
    plan = plan_of("prod-mariadb", ["guest_agent.install=none"])
    assert plan.elements == CONTAINER + ("mariadb",)


def test_extra_elements_come_last_without_duplicates(plan_of, write):
    path = write("a.yaml", """
        extends: prod-mariadb
        name: a
        elements: [growroot, trove-guest, cloud-init-growpart]
    """)
    assert plan_of(path).elements == CONTAINER + (
        "mariadb", "guest-agent", "trove-certs", "growroot", "cloud-init-growpart")


def test_other_distro_and_release(plan_of):
    plan = plan_of("base-debian", ["os.distro=ubuntu", "os.release=null",
                                   "os.mirror=null", "os.security_mirror=null"])
    assert plan.elements[0] == "ubuntu-minimal"
    assert plan.env["DIB_RELEASE"] == "noble"
    assert "DIB_DISTRIBUTION_MIRROR" not in plan.env
    assert "DIB_DEBIAN_SECURITY_MIRROR" not in plan.env


def test_pip_index_and_guest_user(plan_of):
    plan = plan_of("prod-mariadb", ["guest_agent.pip_index=https://pypi.example/simple",
                                    "guest_user=dbagent"])
    assert plan.env["TROVE_GUEST_AGENT_PIP_INDEX"] == "https://pypi.example/simple"
    assert plan.env["TROVE_GUEST_USER"] == "dbagent"


def test_elements_path_has_shipped_and_user_folders_not_dibs(
        plan_of, shipped_elements_dir,
        tmp_path):
    extra = tmp_path / "my-elements"
    extra.mkdir()
    plan = plan_of("prod-mariadb", extra_paths=[str(extra)])
    assert plan.elements_path == (str(shipped_elements_dir), str(extra.resolve()))


def test_packages_are_carried(plan_of):
    assert plan_of("prod-mariadb", ["packages=[vim, curl]"]).packages == ("vim", "curl")


# --------------------------------------------------------------------------
# DibBackend.command

@pytest.fixture
def command(plan_of, tmp_path):
    workdir, cache = tmp_path / "work", tmp_path / "cache"

    def _command(ref="prod-mariadb", sets=(), **kw):
        plan = plan_of(ref, sets, **kw)
        return DibBackend().command(plan, workdir, cache)
    _command.workdir, _command.cache = workdir, cache
    return _command


def option(argv, flag):
    """The value after flag in argv (flag must be there once)."""
    assert argv.count(flag) == 1, (flag, argv)
    return argv[argv.index(flag) + 1]


def test_argv_for_prod_mariadb(command):
    argv, _env = command()
    assert argv[0] == "disk-image-create"
    assert option(argv, "-a") == "amd64"
    assert option(argv, "-t") == "qcow2"
    assert option(argv, "-o") == str(command.workdir / "image")
    assert option(argv, "--image-size") == "4"
    assert option(argv, "--qemu-img-options") == "compression_type=zstd"
    assert "-u" not in argv
    assert "-p" not in argv
    # the elements, in the plan's order, end the command line
    assert tuple(argv[-8:]) == CONTAINER + ("mariadb", "guest-agent", "trove-certs")


def test_argv_size_in_gib(command):
    argv, _env = command(sets=["image.size=6G"])
    assert option(argv, "--image-size") == "6"


def test_argv_uncompressed_qcow2(command):
    argv, _env = command(sets=["image.compression=none"])
    assert "-u" in argv
    assert "--qemu-img-options" not in argv


def test_argv_zlib_qcow2_is_dibs_default(command):
    argv, _env = command(sets=["image.compression=zlib"])
    assert "-u" not in argv
    assert "--qemu-img-options" not in argv


@pytest.mark.parametrize("fmt", ["raw", "vhd"])
def test_argv_other_formats_have_no_compression_options(command, fmt):
    argv, _env = command(sets=[f"image.format={fmt}", "image.compression=none"])
    assert option(argv, "-t") == fmt
    assert "-u" not in argv
    assert "--qemu-img-options" not in argv


def test_argv_extra_packages(command):
    argv, _env = command(sets=["packages=[vim, curl]"])
    assert option(argv, "-p") == "vim,curl"


def test_env_for_disk_image_create(command, shipped_elements_dir):
    _argv, env = command()
    assert str(shipped_elements_dir) in env["ELEMENTS_PATH"].split(":")
    assert env["TMP_DIR"] == str(command.workdir / "tmp")
    assert Path(env["TMP_DIR"]).is_relative_to(command.workdir)
    assert env["DIB_IMAGE_CACHE"] == str(command.cache / "dib")
    # the plan's variables are passed on
    assert env["DIB_RELEASE"] == "trixie"
    assert env["TROVE_GUEST_AGENT_VERSION"] == "26.0.0"


def test_env_elements_path_has_user_folders(command, tmp_path):
    extra = tmp_path / "mine"
    extra.mkdir()
    _argv, env = command(extra_paths=[str(extra)])
    assert env["ELEMENTS_PATH"].split(":")[-1] == str(extra.resolve())


def test_path_has_the_shims_first_when_needed(command, monkeypatch):
    monkeypatch.setattr(host, "shim_dir_needed", lambda: True)
    _argv, env = command()
    assert env["PATH"].split(":")[0] == str(host.SHIMS_DIR)


def test_path_has_no_shims_when_not_needed(command, monkeypatch):
    monkeypatch.setattr(host, "shim_dir_needed", lambda: False)
    _argv, env = command()
    assert str(host.SHIMS_DIR) not in env["PATH"].split(":")
    assert env["PATH"] == host.tool_path()


# --------------------------------------------------------------------------
# check_inputs

def test_check_inputs_accepts_a_matching_output(plan_of, tmp_path):
    check_inputs(plan_of("prod-mariadb", output=tmp_path / "x.qcow2"))
    check_inputs(plan_of("prod-mariadb", ["image.format=raw"], output=tmp_path / "x.raw"))


def test_check_inputs_refuses_an_output_of_another_format(plan_of):
    plan = plan_of("prod-mariadb", output="images/x.raw")
    with pytest.raises(InputError) as info:
        check_inputs(plan)
    assert info.value.message == (
        "-o images/x.raw: the image format is qcow2; name the output *.qcow2")


def test_check_inputs_refuses_an_output_without_suffix(plan_of):
    plan = plan_of("prod-mariadb", ["image.format=raw"], output="images/x")
    with pytest.raises(InputError, match=r"name the output \*\.raw$"):
        check_inputs(plan)


def test_check_inputs_refuses_a_source_without_setup_cfg(plan_of, tmp_path):
    src = tmp_path / "not-trove"
    src.mkdir()
    plan = plan_of("dev-mariadb", [f"trove_source={src}"], output=tmp_path / "d.qcow2")
    with pytest.raises(InputError) as info:
        check_inputs(plan)
    assert info.value.message == (
        f"{plan.profile.source}: guest_agent.path: {src} is not a Trove checkout "
        "(no setup.cfg); give one with --set trove_source=PATH")


def test_check_inputs_refuses_a_missing_source(plan_of, tmp_path):
    plan = plan_of("dev-mariadb", [f"trove_source={tmp_path / 'nowhere'}"],
                   output=tmp_path / "d.qcow2")
    with pytest.raises(InputError, match="is not a Trove checkout"):
        check_inputs(plan)


def test_check_inputs_accepts_a_trove_checkout(plan_of, trove_checkout, tmp_path):
    check_inputs(plan_of("dev-mariadb", [f"trove_source={trove_checkout}"],
                         output=tmp_path / "d.qcow2"))


# --------------------------------------------------------------------------
# pip's CA bundle for the build

def test_ca_bundle_is_passed_to_the_guest_agent_element(known, tmp_path):
    bundle = tmp_path / "ca.pem"
    prof = profiles.load("prod-mariadb", known_elements=known)
    plan = make_plan(prof, None, known, ca_bundle=bundle)
    assert plan.env["TROVE_BUILD_CA_BUNDLE"] == str(bundle)
    assert "TROVE_BUILD_CA_BUNDLE" not in make_plan(prof, None, known).env


def test_ca_bundle_is_not_passed_without_a_guest_agent(known, tmp_path):
    prof = profiles.load("base-debian", known_elements=known)
    plan = make_plan(prof, None, known, ca_bundle=tmp_path / "ca.pem")
    assert "TROVE_BUILD_CA_BUNDLE" not in plan.env


def test_host_ca_bundle_is_taken_from_the_environment(tmp_path, monkeypatch):
    from trove_image_builder.build import stage as build_mod
    for var in ("TROVE_IMAGE_BUILDER_CA_BUNDLE", "PIP_CERT", "REQUESTS_CA_BUNDLE"):
        monkeypatch.delenv(var, raising=False)
    assert build_mod.host_ca_bundle() is None
    bundle = tmp_path / "ca.pem"
    monkeypatch.setenv("PIP_CERT", str(bundle))
    assert build_mod.host_ca_bundle() is None  # not a file (yet)
    bundle.write_text("-----BEGIN CERTIFICATE-----\n")
    assert build_mod.host_ca_bundle() == bundle
    ours = tmp_path / "ours.pem"
    ours.write_text("x")
    monkeypatch.setenv("TROVE_IMAGE_BUILDER_CA_BUNDLE", str(ours))
    assert build_mod.host_ca_bundle() == ours


# --------------------------------------------------------------------------
# The certificate hook

def test_certificate_hook_variables(plan_of, write, tmp_path):
    plan = plan_of("prod-mariadb", ["certificates.volume=LABEL=trove-data"])
    assert "trove-certs" in plan.elements
    assert plan.env["TROVE_CERTS_VOLUME"] == "LABEL=trove-data"
    assert "TROVE_CERTS_USER_HOOK" not in plan.env
    hook = tmp_path / "fetch.sh"
    hook.write_text("#!/bin/sh\n")
    path = write("a.yaml", "extends: prod-mariadb\nname: a\n"
                 "certificates:\n  user_hook: fetch.sh\n")
    plan = plan_of(path, output=tmp_path / "a.qcow2")
    assert plan.env["TROVE_CERTS_USER_HOOK"] == str(hook.resolve())
    check_inputs(plan)


def test_no_certificate_hook_no_element(plan_of):
    plan = plan_of("prod-mariadb", ["certificates.enabled=false"])
    assert "trove-certs" not in plan.elements
    assert not any(name.startswith("TROVE_CERTS_") for name in plan.env)


def test_check_inputs_refuses_a_missing_user_hook(plan_of, write, tmp_path):
    path = write("a.yaml", "extends: prod-mariadb\nname: a\n"
                 "certificates:\n  user_hook: nowhere.sh\n")
    plan = plan_of(path, output=tmp_path / "a.qcow2")
    with pytest.raises(InputError) as info:
        check_inputs(plan)
    assert info.value.message == (
        f"{plan.profile.source}: certificates.user_hook: {tmp_path / 'nowhere.sh'} is not "
        "a file; give the path of your script, relative to the profile")


def test_production_release_agent_is_pruned(plan_of):
    assert plan_of("prod-mariadb").env["TROVE_GUEST_AGENT_PRUNE"] == "1"


def test_development_agent_keeps_its_pip(plan_of, trove_checkout):
    # the developer loop (vm/dev/sync.py) runs the guest venv's pip
    plan = plan_of("dev-mariadb", [f"trove_source={trove_checkout}"])
    assert "TROVE_GUEST_AGENT_PRUNE" not in plan.env


def test_agentless_image_is_not_pruned(plan_of):
    assert "TROVE_GUEST_AGENT_PRUNE" not in plan_of("base-debian").env


def test_a_profile_env_may_turn_pruning_off(plan_of):
    plan = plan_of("prod-mariadb", ["env.TROVE_GUEST_AGENT_PRUNE=0"])
    assert plan.env["TROVE_GUEST_AGENT_PRUNE"] == "0"
