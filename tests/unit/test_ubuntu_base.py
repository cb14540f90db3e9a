"""An Ubuntu base: the shipped base-ubuntu profile as it renders, the guest
user per OS, the plan's Ubuntu variables (the pinned keyring handed to the
bootstrap tools, main and universe, the security pocket), and the build
obtaining the verified keyring before anything is built (a fake backend
registered in the real registry; the keyring from a fake at its seam)."""
import json
import shlex
from pathlib import Path

import pytest

from tests.helpers.cli import assert_error, invoke as run
from tests.helpers.fake_backend import fake_backend
from trove_image_builder import elements, profile as profiles
from trove_image_builder.build import plan as plan_mod, stage, ubuntu_keyring
from trove_image_builder.build.plan import check_inputs, make_plan
from trove_image_builder.errors import BuildError, InputError

KEYRING_VARS = ("DIB_MMDEBSTRAP_EXTRA_ARGS", "DIB_DEBOOTSTRAP_EXTRA_ARGS")


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    path = tmp_path / "cache"
    monkeypatch.setenv("TROVE_IMAGE_BUILDER_CACHE", str(path))
    return path


@pytest.fixture
def plan_of(known):
    def _plan(ref, sets=(), **inputs):
        return make_plan(profiles.load(str(ref), sets, known_elements=known), None, known,
                         **inputs)
    return _plan


def keyring_arg(path) -> str:
    return f"--keyring={shlex.quote(str(path))}"


# --------------------------------------------------------------------------
# The profiles

def test_base_ubuntu_renders_to_noble_from_the_ubuntu_archive():
    p = profiles.load("base-ubuntu")
    assert (p.os.distro, p.os.release) == ("ubuntu", "noble")
    assert p.os.mirror == "http://archive.ubuntu.com/ubuntu"
    assert p.os.security_mirror is None
    assert p.guest_user == "ubuntu"
    assert p.guest_agent.install == "none" and p.datastore is None
    # os.kernel: cloud, the cloud images' kernel (no linux-firmware)
    assert p.os.kernel == "cloud"
    assert make_plan(p, None, elements.discover()).env["DIB_UBUNTU_KERNEL"] == \
        "linux-image-virtual"


def test_base_ubuntu_with_another_mirror():
    p = profiles.load("base-ubuntu", ["ubuntu_mirror=http://m.example/ubuntu"])
    assert p.os.mirror == "http://m.example/ubuntu"


def test_prod_postgresql_noble():
    p = profiles.load("prod-postgresql-noble")
    assert (p.os.distro, p.os.release, p.guest_user) == ("ubuntu", "noble", "ubuntu")
    assert (p.datastore.name, p.datastore.version, p.datastore.runtime, p.datastore.image) \
        == ("postgresql", "17", "container", "built")
    assert (p.guest_agent.install, p.guest_agent.version) == ("release", "26.0.0")
    assert p.variant == "production" and p.cert_hook


def test_the_matrix_has_the_noble_profile():
    entry = next(e for e in profiles.matrix() if e["name"] == "prod-postgresql-noble")
    assert entry["os"] == {"distro": "ubuntu", "release": "noble"}
    assert entry["file"] == "profiles/prod-postgresql-noble.yaml"


# --------------------------------------------------------------------------
# The guest user: a default per OS, a setting all the same

@pytest.mark.parametrize("distro, user", [("ubuntu", "ubuntu"), ("debian", "trove")])
def test_the_guest_user_follows_the_os(write, distro, user):
    path = write("a.yaml", f"name: a\nos:\n  distro: {distro}\nguest_agent: {{install: none}}\n")
    assert profiles.load(str(path)).guest_user == user


def test_switching_the_os_switches_the_default_guest_user():
    assert profiles.load("base-debian", ["os.distro=ubuntu", "os.release=null"]).guest_user \
        == "ubuntu"


def test_the_guest_user_is_still_a_setting():
    assert profiles.load("prod-postgresql-noble", ["guest_user=dbagent"]).guest_user == "dbagent"


def test_the_resolved_guest_user_is_recorded_and_loads_back():
    p = profiles.load("prod-postgresql-noble")
    data = p.to_dict()
    assert data["guest_user"] == "ubuntu"
    assert profiles.from_dict(data, "m.json").digest() == p.digest()


def test_settings_show_the_default_per_os():
    row = next(r for r in profiles.describe_settings() if r[0] == "guest_user")
    assert row[1] == "per os.distro"
    assert "ubuntu: ubuntu" in row[2] and "debian: trove" in row[2]


# --------------------------------------------------------------------------
# The plan

def test_the_plan_of_an_ubuntu_base(plan_of, cache):
    plan = plan_of("prod-postgresql-noble")
    assert plan.elements[0] == "ubuntu-minimal"
    env = plan.env
    assert env["DIB_RELEASE"] == "noble"
    assert env["DIB_DISTRIBUTION_MIRROR"] == "http://archive.ubuntu.com/ubuntu"
    assert env["DIB_DEBIAN_COMPONENTS"] == "main,universe"
    assert env["DIB_UBUNTU_MIRROR_DISTS"] == "updates,security"
    assert env["DIB_APT_MINIMAL_CREATE_INTERFACES"] == "0"
    assert env["TROVE_GUEST_USER"] == "ubuntu"
    assert "DIB_DEBIAN_SECURITY_MIRROR" not in env
    # never through apt-key (ubuntu-minimal's root.d/75 would call it)
    assert "DIB_APT_KEYRING" not in env and "DIB_DEBIAN_KEYRING" not in env
    # before a build obtained it: where verified_keyring keeps it
    kept = cache / "ubuntu-keyring" / "2023.11.28.1" / "ubuntu-archive-keyring.gpg"
    for name in KEYRING_VARS:
        assert env[name] == keyring_arg(kept)


def test_the_plan_names_the_keyring_the_build_obtained(plan_of, tmp_path):
    given = tmp_path / "a folder with a space" / "keyring.gpg"
    env = plan_of("base-ubuntu", apt_keyring=given).env
    for name in KEYRING_VARS:
        assert shlex.split(env[name]) == [f"--keyring={given}"]


def test_a_debian_plan_has_no_ubuntu_variables(plan_of):
    env = plan_of("prod-postgresql").env
    assert not set(KEYRING_VARS) & set(env)
    assert "DIB_UBUNTU_MIRROR_DISTS" not in env
    assert env["DIB_DEBIAN_SECURITY_MIRROR"] == "http://deb.debian.org/debian-security"


def test_the_profiles_own_bootstrap_options_come_after_the_keyring(plan_of, cache):
    env = plan_of("base-ubuntu", ["env={DIB_MMDEBSTRAP_EXTRA_ARGS: --include=vim}"]).env
    kept = ubuntu_keyring.cached_path("noble")
    assert env["DIB_MMDEBSTRAP_EXTRA_ARGS"] == f"{keyring_arg(kept)} --include=vim"
    assert env["DIB_DEBOOTSTRAP_EXTRA_ARGS"] == keyring_arg(kept)


def test_the_profile_may_change_the_components(plan_of):
    env = plan_of("base-ubuntu", ["env={DIB_DEBIAN_COMPONENTS: 'main,universe,restricted'}"]).env
    assert env["DIB_DEBIAN_COMPONENTS"] == "main,universe,restricted"


@pytest.mark.parametrize("option", ["--no-check-gpg",
                                    "--aptopt=Acquire::AllowInsecureRepositories=true"])
def test_switching_signature_checks_off_is_refused(plan_of, option):
    plan = plan_of("base-ubuntu", [f"env={{DIB_DEBOOTSTRAP_EXTRA_ARGS: '{option}'}}"])
    with pytest.raises(InputError, match="would switch off the archive's signature checks"):
        check_inputs(plan)


def test_a_separate_security_mirror_is_refused_on_ubuntu(plan_of):
    plan = plan_of("base-ubuntu", ["os.security_mirror=http://security.example/ubuntu"])
    with pytest.raises(InputError) as info:
        check_inputs(plan)
    assert "os.security_mirror: Ubuntu's security pocket (noble-security) comes from " \
        "os.mirror" in info.value.message


def test_the_same_security_mirror_is_fine(plan_of):
    check_inputs(plan_of("base-ubuntu", ["os.security_mirror=http://archive.ubuntu.com/ubuntu"]))


def test_a_release_without_a_pinned_keyring_is_refused_before_anything(known, monkeypatch):
    monkeypatch.setattr(ubuntu_keyring, "KEYRING_VERSIONS", {"jammy": "2021.03.26"})
    prof = profiles.load("base-ubuntu")
    with pytest.raises(InputError, match="no pinned ubuntu-keyring for Ubuntu 'noble'"):
        make_plan(prof, None, known)


# --------------------------------------------------------------------------
# The build: the verified keyring, obtained before anything is built

@pytest.fixture
def fake(monkeypatch):
    with fake_backend(monkeypatch) as backend:
        yield backend


@pytest.fixture
def keyrings(monkeypatch, tmp_path):
    """verified_keyring replaced at its seam: records its calls, answers a
    file, or raises what ``refuse`` holds."""
    calls = []
    answer = tmp_path / "verified.gpg"
    answer.write_bytes(b"keys")

    def verified_keyring(mirror, release):
        calls.append((mirror, release))
        if verified_keyring.refuse is not None:
            raise verified_keyring.refuse
        return answer
    verified_keyring.refuse = None
    verified_keyring.calls = calls
    verified_keyring.answer = answer
    monkeypatch.setattr(ubuntu_keyring, "verified_keyring", verified_keyring)
    return verified_keyring


def test_an_ubuntu_build_hands_the_verified_keyring_to_the_backend(fake, keyrings, tmp_path):
    out = tmp_path / "noble.qcow2"
    _, manifest = stage.build(profiles.load("prod-postgresql-noble"), out, backend_name="fake")
    assert keyrings.calls == [("http://archive.ubuntu.com/ubuntu", "noble")]
    [seen] = fake.seen
    for name in KEYRING_VARS:
        assert seen["plan"].env[name] == keyring_arg(keyrings.answer)
    assert "keyring" in manifest["timings"]
    assert manifest["contract"]["guest_user"] == "ubuntu"
    assert manifest["contract"]["distro"] == "ubuntu"


def test_a_debian_build_fetches_no_keyring(fake, keyrings, tmp_path):
    stage.build(profiles.load("prod-postgresql"), tmp_path / "x.qcow2", backend_name="fake")
    assert keyrings.calls == []


def test_a_refused_keyring_stops_the_build_before_the_backend(fake, keyrings, tmp_path):
    keyrings.refuse = BuildError("http://m/ubuntu-keyring.deb: ubuntu-archive-keyring.gpg "
                                 "does not hold exactly the pinned Ubuntu archive signing "
                                 "keys (not Ubuntu's: ABCD); refusing it")
    with pytest.raises(BuildError, match="refusing it"):
        stage.build(profiles.load("base-ubuntu"), tmp_path / "x.qcow2", backend_name="fake")
    assert fake.seen == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["verified.gpg"]


def test_the_cli_says_one_line_and_exits_1_when_the_keyring_is_refused(
        keyrings, tmp_path, monkeypatch):
    """The real build command with the dib backend: the refusal comes
    before the backend would run (the host check passes here)."""
    monkeypatch.setattr(stage.host, "require", lambda checks, what: None)
    keyrings.refuse = BuildError("K: not Ubuntu's keys; refusing it")
    out = tmp_path / "x.qcow2"
    result = run("build", "base-ubuntu", "-o", str(out))
    assert result.exit_code == 1, result.output
    assert result.stderr.splitlines()[-1] == "Error: K: not Ubuntu's keys; refusing it"
    assert "Traceback" not in result.output and result.stdout == ""
    assert sorted(p.name for p in tmp_path.iterdir()) == ["verified.gpg"]


def test_the_dry_run_fetches_nothing_and_names_the_kept_keyring(keyrings, cache):
    result = run("build", "prod-postgresql-noble", "--dry-run")
    assert result.exit_code == 0, result.output
    exports = dict(ln[len("export "):].split("=", 1) for ln in result.stdout.splitlines()
                   if ln.startswith("export "))
    kept = cache / "ubuntu-keyring" / "2023.11.28.1" / "ubuntu-archive-keyring.gpg"
    assert shlex.split(exports["DIB_MMDEBSTRAP_EXTRA_ARGS"]) == [f"--keyring={kept}"]
    assert keyrings.calls == [] and not cache.exists()


def test_the_dry_run_refuses_a_release_with_no_pinned_keyring(keyrings, monkeypatch):
    monkeypatch.setattr(ubuntu_keyring, "KEYRING_VERSIONS", {"jammy": "2021.03.26"})
    assert_error(run("build", "base-ubuntu", "--dry-run"),
                 "no pinned ubuntu-keyring for Ubuntu 'noble'; known: jammy", exit_code=2)


def test_the_layer_keys_of_a_preview_are_the_builds(plan_of, cache):
    """explain (a preview) and the build name the same keyring path, so
    --explain tells what the build will reuse."""
    from trove_image_builder.build import layers
    kept = ubuntu_keyring.cached_path("noble")
    preview = layers.plan_layers(plan_of("base-ubuntu"), dib_version="x")
    built = layers.plan_layers(plan_of("base-ubuntu", apt_keyring=kept), dib_version="x")
    assert preview.top.key == built.top.key


def test_obtain_keyring_asks_the_profiles_mirror(keyrings):
    prof = profiles.load("base-ubuntu", ["ubuntu_mirror=http://m.example/ubuntu"])
    assert plan_mod.obtain_keyring(prof) == keyrings.answer
    assert keyrings.calls == [("http://m.example/ubuntu", "noble")]
    assert plan_mod.obtain_keyring(profiles.load("base-debian")) is None


def test_manifest_json_of_the_fake_build_is_json(fake, keyrings, tmp_path):
    out = tmp_path / "n.qcow2"
    stage.build(profiles.load("base-ubuntu"), out, backend_name="fake")
    assert json.loads(Path(f"{out}.manifest.json").read_text())["profile"]["resolved"][
        "os"]["distro"] == "ubuntu"


def test_the_engine_keeps_its_own_image_store(shipped_elements_dir):
    """Docker 29 (noble-updates) defaults to the containerd image store, whose
    image IDs are manifest digests: the preloaded images are tagged, and
    recorded, by their configuration's digest."""
    daemon = shipped_elements_dir / "container-engine" / "static" / "etc" / "docker" / \
        "daemon.json"
    assert json.loads(daemon.read_text()) == {"features": {"containerd-snapshotter": False}}


@pytest.mark.parametrize("package, when", [
    ("ifupdown", "DISTRO_NAME != ubuntu"), ("isc-dhcp-client", "DISTRO_NAME != ubuntu"),
    ("systemd-resolved", "DISTRO_NAME = ubuntu")])
def test_the_network_stack_per_os(shipped_elements_dir, package, when):
    import yaml
    installs = yaml.safe_load(
        (shipped_elements_dir / "trove-guest" / "package-installs.yaml").read_text())
    assert installs[package] == {"when": when}
