"""The guest agent against the OS release's Python: the tables, and the
one-line refusal at load (so --dry-run refuses too)."""
import pytest
from packaging.version import Version

from tests.helpers.cli import REPO, assert_error, invoke as run
from trove_image_builder import profile as profiles
from trove_image_builder.errors import ProfileError
from trove_image_builder.profile import agent_python as ap

AGENT = """
name: a
variant: {variant}
os:
  distro: {distro}
  release: {release}
guest_agent:
  install: {install}
"""


def agent_profile(write, distro="ubuntu", release="jammy", install="release",
                  variant="production", extra=""):
    return write("a.yaml", AGENT.format(distro=distro, release=release, install=install,
                                        variant=variant) + extra)


def error_of(ref, sets=()):
    with pytest.raises(ProfileError) as info:
        profiles.load(str(ref), sets)
    return info.value.message


# --------------------------------------------------------------------------
# The tables

def test_the_os_pythons():
    assert ap.OS_PYTHON == {("debian", "bookworm"): "3.11", ("debian", "trixie"): "3.13",
                            ("ubuntu", "jammy"): "3.10", ("ubuntu", "noble"): "3.12"}


def test_every_default_release_has_a_known_python():
    for distro, info in profiles.DISTROS.items():
        assert ap.os_python(distro, info.release), distro


def test_the_agent_requirements_never_go_down():
    releases = sorted(ap.AGENT_REQUIRES_PYTHON, key=Version)
    floors = [Version(ap.AGENT_REQUIRES_PYTHON[r].lstrip(">=")) for r in releases]
    assert all(spec.startswith(">=") for spec in ap.AGENT_REQUIRES_PYTHON.values())
    assert floors == sorted(floors)
    assert ap.AGENT_REQUIRES_PYTHON["26.0.0"] == ">=3.11"
    assert ap.AGENT_REQUIRES_PYTHON["25.1.0"] == ">=3.10"


@pytest.mark.parametrize("version, spec", [
    ("26.0.0", ">=3.11"), ("25.1.0", ">=3.10"), ("23.0.0", ">=3.9"),
    ("25.0.5", ">=3.10"),       # not listed: the newest release listed below it
    ("27.0.0", ">=3.11"),       # newer than the table: at least the newest's
    ("17.0.1", None),           # before Requires-Python was declared
    ("master", None),           # not a version
])
def test_release_requires(version, spec):
    got = ap.release_requires(version)
    assert (str(got) if got is not None else None) == spec


@pytest.mark.parametrize("python, newest", [
    ("3.13", "26.0.0"), ("3.12", "26.0.0"), ("3.11", "26.0.0"), ("3.10", "25.1.0"),
    ("3.9", "23.1.0"), ("3.8", "22.0.1"), ("3.7", None),
])
def test_newest_release_for(python, newest):
    assert ap.newest_release_for(python) == newest


# --------------------------------------------------------------------------
# Refused at load

def test_jammy_refuses_the_trove_26_agent(write):
    path = agent_profile(write, extra="  version: \"26.0.0\"\n")
    assert error_of(path) == (
        "a.yaml: guest_agent.version: the Trove 26.0.0 guest agent needs Python >=3.11 "
        "(its Requires-Python) and Ubuntu jammy has Python 3.10; the newest agent release "
        "that runs there is 25.1.0")


def test_jammy_takes_the_newest_release_that_fits(write):
    path = agent_profile(write, extra="  version: \"25.1.0\"\n")
    assert profiles.load(str(path)).guest_agent.version == "25.1.0"


@pytest.mark.parametrize("distro, release", [("ubuntu", "noble"), ("debian", "bookworm"),
                                             ("debian", "trixie")])
def test_newer_pythons_take_the_trove_26_agent(write, distro, release):
    path = agent_profile(write, distro, release, extra="  version: \"26.0.0\"\n")
    assert profiles.load(str(path)).os.release == release


def test_ubuntu_defaults_to_noble_which_runs_the_agent(known):
    p = profiles.load("prod-mariadb", ["os.distro=ubuntu", "os.release=null"],
                      known_elements=known)
    assert (p.os.release, p.guest_agent.version) == ("noble", "26.0.0")


JAMMY_26 = ("profiles/prod-mariadb.yaml: guest_agent.version: the Trove 26.0.0 guest agent "
            "needs Python >=3.11 (its Requires-Python) and Ubuntu jammy has Python 3.10; the "
            "newest agent release that runs there is 25.1.0")


def test_the_error_names_the_file_that_set_the_version(monkeypatch):
    monkeypatch.chdir(REPO)
    assert error_of("prod-mariadb", ["os.distro=ubuntu", "os.release=jammy"]) == JAMMY_26


def test_the_error_from_set(write):
    path = agent_profile(write, extra="  version: \"25.1.0\"\n")
    assert error_of(path, ["guest_agent.version=26.0.0"]).startswith(
        "--set: guest_agent.version: the Trove 26.0.0 guest agent needs Python >=3.11")


def test_an_os_release_unknown_here_is_not_checked(write):
    path = agent_profile(write, release="oracular", extra="  version: \"26.0.0\"\n")
    assert profiles.load(str(path)).os.release == "oracular"


def test_no_agent_no_check(write):
    path = agent_profile(write, install="none")
    assert profiles.load(str(path)).guest_agent.install == "none"


def test_the_dry_run_refuses_it_too(tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)
    result = run("build", "prod-mariadb", "--dry-run", "-o", str(tmp_path / "x.qcow2"),
                 "--set", "os.distro=ubuntu", "--set", "os.release=jammy")
    assert_error(result, JAMMY_26)


# --------------------------------------------------------------------------
# install: source reads the tree's own requirement

def source_profile(write, tmp_path, setup_cfg=None, pyproject=None, release="jammy"):
    tree = tmp_path / "trove"
    tree.mkdir(exist_ok=True)
    if setup_cfg is not None:
        (tree / "setup.cfg").write_text(setup_cfg)
    if pyproject is not None:
        (tree / "pyproject.toml").write_text(pyproject)
    return agent_profile(write, release=release, install="source", variant="development",
                         extra="  path: trove\n"), tree


def test_a_source_tree_that_needs_a_newer_python_is_refused(write, tmp_path):
    path, tree = source_profile(write, tmp_path,
                                "[metadata]\nname = trove\npython_requires = >= 3.11\n")
    assert error_of(path) == (
        f"a.yaml: guest_agent.path: the Trove tree at {tree} needs Python >=3.11 (setup.cfg "
        "python_requires) and Ubuntu jammy has Python 3.10; the newest agent release that "
        "runs there is 25.1.0")


def test_a_source_tree_that_fits_is_accepted(write, tmp_path):
    path, tree = source_profile(write, tmp_path,
                                "[metadata]\nname = trove\npython_requires = >=3.10\n")
    assert profiles.load(str(path)).guest_agent.path == str(tree)


def test_pyproject_is_read_when_setup_cfg_says_nothing(write, tmp_path):
    path, tree = source_profile(write, tmp_path, "[metadata]\nname = trove\n",
                                '[project]\nname = "trove"\nrequires-python = ">=3.13"\n',
                                release="noble")
    assert error_of(path) == (
        f"a.yaml: guest_agent.path: the Trove tree at {tree} needs Python >=3.13 "
        "(pyproject.toml requires-python) and Ubuntu noble has Python 3.12; the newest "
        "agent release that runs there is 26.0.0")


@pytest.mark.parametrize("setup_cfg", [None, "[metadata]\nname = trove\n",
                                       "[metadata]\npython_requires = not a spec\n",
                                       "this is not ini\n"])
def test_a_tree_whose_requirement_cannot_be_read_is_not_checked(write, tmp_path, setup_cfg):
    path, tree = source_profile(write, tmp_path, setup_cfg)
    assert profiles.load(str(path)).guest_agent.path == str(tree)


def test_tree_requires_reads_setup_cfg_first(tmp_path):
    (tmp_path / "setup.cfg").write_text("[metadata]\npython_requires = >=3.9\n")
    (tmp_path / "pyproject.toml").write_text('[project]\nrequires-python = ">=3.13"\n')
    spec, where = ap.tree_requires(tmp_path)
    assert (str(spec), where) == (">=3.9", "setup.cfg python_requires")
