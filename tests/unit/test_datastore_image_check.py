"""The boot-time check of the datastore image the guest agent will run
(elements/container-engine, trove-datastore-image) loaded as a module: each
line it writes, with the engine faked and the injected files in a folder
here; and the image and tag it computes, against Trove's own option parsing
(trove==26.0.0 in this project's virtualenv stands in for the agent's)."""
import json
import os
from pathlib import Path
import shutil
import subprocess
import sys

import pytest

from trove_image_builder import shipped_dir
from trove_image_builder.contract import injected, paths
from tests.helpers.scripts import load_script

ELEMENT = shipped_dir("elements") / "container-engine"
SCRIPT = ELEMENT / "static/usr/local/sbin/trove-datastore-image"
UNIT = ELEMENT / "static/etc/systemd/system/trove-datastore-image.service"
# this project's virtualenv has Trove installed: the agent's venv in the tests
AGENT_VENV = Path(sys.executable).parent.parent
IMAGE_ID = "sha256:" + "ab" * 32


def _load():
    return load_script(SCRIPT, "trove_datastore_image")


tdi = _load()


class Engine:
    """subprocess.run for the check: docker faked; the agent's python run for
    real, or its answer faked (answer=dict)."""

    def __init__(self, held=None, error="", answer=None):
        self.held = held or {}          # ref -> image id
        self.error = error
        self.answer = answer
        self.asked = []

    def __call__(self, argv, **how):
        if argv[0] == "docker":
            ref = argv[-1]
            self.asked.append(ref)
            if self.error:
                return subprocess.CompletedProcess(argv, 1, "", self.error + "\n")
            if ref in self.held:
                return subprocess.CompletedProcess(argv, 0, self.held[ref] + "\n", "")
            return subprocess.CompletedProcess(argv, 1, "", f"Error: No such image: {ref}\n")
        if self.answer is not None:
            return subprocess.CompletedProcess(argv, 0, json.dumps(self.answer) + "\n", "")
        return subprocess.run(argv, **how)


@pytest.fixture
def site(tmp_path):
    """A guest's files in tmp_path: site.write(name, text) in the injected folder."""
    for name in ("conf.d", "home", "etc"):
        (tmp_path / name).mkdir()
    s = tdi.Settings(injected=str(tmp_path / "conf.d"), agent_venv=str(AGENT_VENV),
                     images_list=str(tmp_path / "images.list"),
                     eth1=str(tmp_path / "eth1.json"), home=str(tmp_path / "home"),
                     etc=str(tmp_path / "etc"))

    def write(name, text, where=s.injected):
        path = Path(where) / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        return path
    s.write = write
    return s


def guest_info(manager="mariadb", version="11.8", isolation=True):
    """guest_info.conf as Trove 26 writes it (contract.injected)."""
    return injected.Injection(manager=manager, datastore_version=version,
                              transport_url="rabbit://x", network_isolation=isolation
                              ).guest_info()


def answer(manager="mariadb", image="mariadb", version="11.8", isolation=True):
    return {"manager": manager, "docker_image": image, "version": version,
            "network_isolation": isolation}


def line(site, engine, capsys):
    """The one line main writes; its status must be 0."""
    assert tdi.main([], settings=site, run=engine) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 1, out
    assert out[0].startswith("trove-datastore-image: ")
    return out[0].removeprefix("trove-datastore-image: ")


# ---------------------------------------------------------------- the lines

def test_nothing_injected_yet(site, capsys):
    engine = Engine()
    assert line(site, engine, capsys) == (
        f"nothing injected yet (no {site.injected}/guest_info.conf): the guest agent does "
        "not start, and there is no datastore image to check")
    assert engine.asked == []


def test_the_tag_is_present(site, capsys):
    site.write("guest_info.conf", guest_info())
    engine = Engine(held={"mariadb:11.8": IMAGE_ID}, answer=answer())
    assert line(site, engine, capsys) == (
        f"mariadb:11.8 is present ({IMAGE_ID}); the guest agent will run it ([mariadb] "
        "docker_image 'mariadb' (Trove's default), datastore_version '11.8' from "
        "guest_info.conf)")
    assert engine.asked == ["mariadb:11.8"]


def test_the_tag_is_missing(site, capsys):
    site.write("guest_info.conf", guest_info(version="10.11"))
    site.write("images.list", f"mariadb:11.8 image-00.tar {IMAGE_ID}\n", where=Path(
        site.images_list).parent)
    engine = Engine(held={"mariadb:11.8": IMAGE_ID}, answer=answer(version="10.11"))
    assert line(site, engine, capsys) == (
        "the guest agent will run mariadb:10.11 ([mariadb] docker_image 'mariadb' (Trove's "
        "default), datastore_version '10.11' from guest_info.conf), which this image does "
        "not hold (it holds mariadb:11.8); the agent will pull it at prepare, and with no "
        "registry reachable, prepare will fail")


def test_nothing_preloaded(site, capsys):
    site.write("guest_info.conf", guest_info(manager="postgresql", version="17"))
    engine = Engine(answer=answer("postgresql", "postgres", "17"))
    said = line(site, engine, capsys)
    assert said.startswith("the guest agent will run postgres:17 ([postgresql] docker_image "
                           "'postgres' (Trove's default), datastore_version '17' from "
                           "guest_info.conf), which this image does not hold (nothing was "
                           "preloaded into it); the agent will pull it at prepare")


@pytest.mark.parametrize("isolation, eth1, pulls", [
    (True, True, True), (True, False, False), (False, True, False)])
def test_network_isolation_pulls_regardless(site, capsys, isolation, eth1, pulls):
    """trove/guestagent/utils/docker.py: with network_isolation and eth1.json
    the agent creates the container through the low-level API, which pulls first."""
    site.write("guest_info.conf", guest_info(isolation=isolation))
    if eth1:
        Path(site.eth1).write_text('{"mac_address": "fa:16:3e:00:00:01"}')
    engine = Engine(held={"mariadb:11.8": IMAGE_ID}, answer=answer(isolation=isolation))
    said = line(site, engine, capsys)
    if pulls:
        assert said.startswith(f"mariadb:11.8 is present ({IMAGE_ID}), but the guest agent "
                               "will try to pull it regardless ([mariadb] docker_image")
        assert said.endswith(f"network_isolation is on and {site.eth1} exists, so it pulls "
                             "before it creates the container; with no registry reachable, "
                             "prepare will fail")
    else:
        assert said.startswith(f"mariadb:11.8 is present ({IMAGE_ID}); the guest agent will "
                               "run it")


def test_the_engine_cannot_be_asked(site, capsys):
    site.write("guest_info.conf", guest_info())
    error = ("Cannot connect to the Docker daemon at unix:///var/run/docker.sock. "
             "Is the docker daemon running?")
    engine = Engine(error=error, answer=answer())
    assert line(site, engine, capsys) == (
        "could not ask the engine whether it holds mariadb:11.8 ([mariadb] docker_image "
        f"'mariadb' (Trove's default), datastore_version '11.8' from guest_info.conf): {error}")


def test_a_manager_without_a_container_image(site, capsys):
    site.write("guest_info.conf", guest_info(manager="redis", version="7"))
    engine = Engine(answer=answer("redis", None, "7"))
    assert line(site, engine, capsys) == (
        "guest_info.conf names datastore_manager 'redis', which has no docker_image option "
        "in Trove: the guest agent runs no container for it")
    assert engine.asked == []


def test_no_version_is_latest(site, capsys):
    """start_db: '<docker_image>:latest' when ds_version is empty."""
    site.write("guest_info.conf", "[DEFAULT]\nguest_id=x\ndatastore_manager=mysql\n")
    engine = Engine(held={"mysql:latest": IMAGE_ID}, answer=answer("mysql", "mysql", None))
    said = line(site, engine, capsys)
    assert said.startswith(f"mysql:latest is present ({IMAGE_ID}); the guest agent will run "
                           "it ([mysql] docker_image 'mysql' (Trove's default), no "
                           "datastore_version: the agent's start_db takes ':latest')")


def test_without_the_agents_python_the_files_are_read(site, capsys):
    site.write("guest_info.conf", guest_info())
    site.agent_venv = f"{site.home}/no-venv"
    engine = Engine(held={"mariadb:11.8": IMAGE_ID})
    said = line(site, engine, capsys)
    assert said.startswith(f"mariadb:11.8 is present ({IMAGE_ID}); the guest agent will run "
                           "it ([mariadb] docker_image 'mariadb' (Trove's default), "
                           "datastore_version '11.8' from guest_info.conf; read with "
                           "configparser: the agent's python could not tell (")
    assert "no-venv/bin/python3" in said


def test_unreadable_configuration(site, capsys):
    site.write("guest_info.conf", "datastore_manager=mariadb\n")    # no section
    site.agent_venv = "/nonexistent"
    said = line(site, Engine(), capsys)
    assert said.startswith("could not read the guest agent's configuration (the agent's "
                           "python: ")
    assert said.endswith("): nothing checked")


def test_usage():
    assert tdi.main(["boot"]) == 2


# ------------------------------------------- the tag, as the agent computes it

def test_the_defaults_are_trove_s():
    """DOCKER_IMAGES is every docker_image option of trove/common/cfg.py, with its default."""
    from trove.common import cfg
    found = {}
    for name, value in vars(cfg).items():
        if name.endswith("_opts") and isinstance(value, list):
            for opt in value:
                if getattr(opt, "name", None) == "docker_image":
                    found[name.removesuffix("_opts")] = opt.default
    assert found == tdi.DOCKER_IMAGES


def test_a_docker_image_override_is_honoured(site, capsys):
    """The controller's trove-guestagent.conf may name the image (a private
    registry): the agent's own parsing finds it."""
    site.write("guest_info.conf", guest_info(version="10.11"))
    site.write("trove-guestagent.conf", "[DEFAULT]\ndebug = True\n"
               "[mariadb]\ndocker_image = registry.example:5000/db/mariadb\n")
    engine = Engine(held={"registry.example:5000/db/mariadb:10.11": IMAGE_ID})
    assert line(site, engine, capsys) == (
        f"registry.example:5000/db/mariadb:10.11 is present ({IMAGE_ID}); the guest agent "
        "will run it ([mariadb] docker_image 'registry.example:5000/db/mariadb' from "
        "trove-guestagent.conf, datastore_version '10.11' from guest_info.conf)")
    assert engine.asked == ["registry.example:5000/db/mariadb:10.11"]


# (file, text) in the injected folder ("conf.d/") or the agent's home ("home/")
SCENARIOS = {
    "defaults": [],
    "override in trove-guestagent.conf": [
        ("conf.d/trove-guestagent.conf", "[mariadb]\ndocker_image = quay.io/x/mariadb\n")],
    "group names in any case": [
        ("conf.d/trove-guestagent.conf", "[MariaDB]\ndocker_image = quay.io/x/mariadb\n")],
    "DEFAULT's docker_image is not the group's": [
        ("conf.d/trove-guestagent.conf", "[DEFAULT]\ndocker_image = not/this\n")],
    "a later file wins": [
        ("conf.d/trove-guestagent.conf", "[DEFAULT]\ndatastore_version = 10.6\n"
         "[mariadb]\ndocker_image = first\n"),
        ("conf.d/zz-site.conf", "[mariadb]\ndocker_image = second\n")],
    "the agent's ~/.trove/trove.conf, overridden by conf.d": [
        ("home/.trove/trove.conf", "[DEFAULT]\ndatastore_version = 1.0\n"
         "[mariadb]\ndocker_image = from/home\n")],
    "isolation off": [("conf.d/zz-site.conf", "[DEFAULT]\nnetwork_isolation = off\n")],
}


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_the_files_read_as_trove_reads_them(site, scenario):
    """The configparser reading (used when the agent's python cannot tell)
    finds what Trove's own parsing (trove.common.cfg.parse_args, in the
    agent's python) finds; the agent's answer is what the check uses."""
    site.write("guest_info.conf", guest_info(version="11.8"))
    for name, text in SCENARIOS[scenario]:
        folder, file = name.split("/", 1)
        site.write(file, text, where={"conf.d": site.injected, "home": site.home}[folder])
    agent, why = tdi.ask_agent(site)
    assert agent is not None, why
    mine = tdi.read_files(site)
    fields = ("manager", "docker_image", "version", "network_isolation")
    assert [getattr(mine, f) for f in fields] == [getattr(agent, f) for f in fields]
    # and each value is traced to the file that set it
    attributed = tdi.attribute(site, agent)
    assert tdi.SOMEWHERE not in (attributed.image_from, attributed.version_from)


def test_the_config_files_in_oslo_configs_order(site):
    """oslo.config: the first trove.conf and trove-guestagent.conf found in
    ~/.trove, ~, /etc/trove, /etc; then --config-dir's *.conf by name."""
    for where, name in ((f"{site.home}/.trove", "trove.conf"), (site.home, "trove.conf"),
                        (f"{site.etc}/trove", "trove-guestagent.conf"),
                        (site.etc, "trove-guestagent.conf"), (site.injected, "b.conf"),
                        (site.injected, "a.conf"), (site.injected, "a.txt")):
        site.write(name, "", where=where)
    assert tdi.config_files(site) == [
        f"{site.home}/.trove/trove.conf", f"{site.etc}/trove/trove-guestagent.conf",
        f"{site.injected}/a.conf", f"{site.injected}/b.conf"]


# ------------------------------------------------------------ the files

def test_the_script_runs_on_the_images_own_python():
    assert SCRIPT.read_text().splitlines()[0] == "#!/usr/bin/python3"
    assert os.access(SCRIPT, os.X_OK)


def test_the_docstring_names_each_line():
    for case in ("not injected", "present", "pulls anyway", "absent", "no image", "no engine"):
        assert f"\n    {case} " in tdi.__doc__


@pytest.mark.skipif(os.path.exists("/etc/trove/conf.d/guest_info.conf") or
                    not os.path.exists("/usr/bin/python3"), reason="needs a host with no Trove")
def test_it_runs_as_a_program_on_the_system_python():
    done = subprocess.run(["/usr/bin/python3", str(SCRIPT)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("trove-datastore-image: nothing injected yet")


def test_static_files_agree_with_the_contract():
    p = paths.current()
    s = tdi.Settings()
    assert (s.injected, s.agent_venv) == (p.injected, p.agent_venv)
    assert s.images_list == f"{p.images}/images.list"
    assert s.eth1 == injected.ETH1_CONFIG
    assert s.guest_info == p.guest_info
    agent = (shipped_dir("elements") / "guest-agent/static/etc/systemd/system" /
             p.agent_unit).read_text()
    # the agent's own command line is the one the check parses
    assert f"ExecStart={' '.join(s.agent_argv())}\n" in agent
    unit = UNIT.read_text()
    assert "ExecStart=/usr/local/sbin/trove-datastore-image\n" in unit
    # the agent does not wait for it
    assert "Before=" not in unit and "trove-datastore-image" not in agent
    after = next(ln for ln in unit.splitlines() if ln.startswith("After="))
    for before_me in ("trove-preload-images.service", "docker.service", "cloud-init.service",
                      "cloud-config.service"):
        assert before_me in after.split("=", 1)[1].split()
    # it only tells: nothing requires it, and a missing guest_info.conf is a line, not a skip
    assert "trove-datastore-image" not in agent and "ConditionPathExists" not in unit


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="needs shellcheck")
def test_the_agent_element_enables_it_and_passes_shellcheck():
    # the guest-agent element wires the check to the agent: in a layered
    # build the container engine's layer is made before the agent exists
    script = ELEMENT.parent / "guest-agent/post-install.d/60-guest-agent-enable"
    text = script.read_text()
    assert "    systemctl enable trove-datastore-image.service\n" in text
    assert "if [ -f /etc/systemd/system/trove-datastore-image.service ]; then" in text
    assert "trove-datastore-image" not in \
        (ELEMENT / "post-install.d/65-container-engine-enable").read_text()
    done = subprocess.run(["shellcheck", str(script)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout
