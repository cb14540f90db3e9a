"""The shipped DIB elements, read as files (nothing is run but 'bash -n'),
and element discovery."""
import os
from pathlib import Path
import shutil
import subprocess

import pytest
import yaml

from trove_image_builder import elements, shipped_dir
from trove_image_builder.elements import DatastoreInfo
from trove_image_builder.errors import InputError
from trove_image_builder.profile import DatastoreSpec

ELEMENTS_DIR = shipped_dir("elements")
SHIPPED = sorted(p.name for p in ELEMENTS_DIR.iterdir()
                 if p.is_dir() and not p.name.startswith((".", "_")))

# environment.d files are sourced by DIB (not executed): no shebang, and no
# 'set -e' that would leak into disk-image-create's own shell.
SOURCED_PHASES = {"environment.d"}


def phase_files(sourced: bool):
    out = []
    for element in SHIPPED:
        for phase in sorted((ELEMENTS_DIR / element).glob("*.d")):
            if not phase.is_dir() or (phase.name in SOURCED_PHASES) != sourced:
                continue
            out += [f for f in sorted(phase.iterdir()) if f.is_file()]
    return out


SCRIPTS = phase_files(sourced=False)
SOURCED = phase_files(sourced=True)
ALL_PHASE_FILES = SCRIPTS + SOURCED


def rel(path: Path) -> str:
    return str(path.relative_to(ELEMENTS_DIR))


def test_the_shipped_elements():
    assert {"trove-guest", "guest-agent", "dev-access", "mariadb", "postgresql"} <= set(SHIPPED)
    assert SCRIPTS, "no phase scripts found"


@pytest.mark.parametrize("element", SHIPPED)
def test_element_has_a_readme(element, known):
    readme = ELEMENTS_DIR / element / "README.rst"
    assert readme.is_file()
    assert element in readme.read_text().splitlines()[:3], "README title is the element name"
    assert known[element].description, "the README gives a one-line description"
    assert known[element].origin == "shipped"


@pytest.mark.parametrize("script", SCRIPTS, ids=rel)
def test_phase_script_is_strict_bash(script):
    text = script.read_text()
    assert text.startswith("#!/bin/bash\n")
    assert "set -eu\n" in text
    assert "set -o pipefail\n" in text
    assert 'if [ "${DIB_DEBUG_TRACE:-0}" -gt 0 ]; then\n    set -x\nfi' in text
    # the trace check comes before the work
    assert text.index("DIB_DEBUG_TRACE") < text.index("set -eu")


@pytest.mark.parametrize("script", SCRIPTS, ids=rel)
def test_phase_script_is_executable(script):
    # DIB runs these (environment.d files are sourced and need no +x)
    assert os.access(script, os.X_OK), f"chmod +x {script}"


@pytest.mark.parametrize("script", SOURCED, ids=rel)
def test_environment_file_only_exports_defaults(script):
    for line in script.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            assert line.startswith("export "), line


@pytest.mark.skipif(shutil.which("bash") is None, reason="no bash")
@pytest.mark.parametrize("script", ALL_PHASE_FILES, ids=rel)
def test_phase_file_parses_as_bash(script):
    proc = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize("element", [e for e in SHIPPED
                                     if (ELEMENTS_DIR / e / "element-deps").exists()])
def test_element_deps_exist(element, known):
    deps_file = ELEMENTS_DIR / element / "element-deps"
    deps = [ln.strip() for ln in deps_file.read_text().splitlines()
            if ln.strip() and not ln.lstrip().startswith("#")]
    assert deps
    missing = [d for d in deps if d not in known]
    assert not missing, f"{element}/element-deps names unknown elements: {missing}"


@pytest.mark.parametrize("element", [e for e in SHIPPED if
                                     (ELEMENTS_DIR / e / "package-installs.yaml").exists()])
def test_package_installs_is_a_mapping(element, known):
    assert "package-installs" in known
    path = ELEMENTS_DIR / element / "package-installs.yaml"
    data = yaml.safe_load(path.read_text())
    assert isinstance(data, dict) and data


DATASTORE_ELEMENTS = [e for e in SHIPPED if (ELEMENTS_DIR / e / "datastore.yaml").exists()]


def test_the_shipped_datastores(known):
    assert DATASTORE_ELEMENTS == ["mariadb", "mysql", "postgresql"]
    assert sorted(elements.datastores(known)) == ["mariadb", "mysql", "postgresql"]


@pytest.mark.parametrize("element", DATASTORE_ELEMENTS)
def test_datastore_yaml_parses(element, known):
    info = known[element].datastore
    assert isinstance(info, DatastoreInfo)
    assert info.name == element
    assert info.runtimes
    assert set(info.runtimes) <= set(DatastoreSpec.__dataclass_fields__["runtime"]
                                     .metadata["choices"])
    for value in (info.package, info.service, info.data_dir, info.query):
        assert isinstance(value, str) and value
    assert info.data_dir.startswith("/")


def test_package_for_fills_in_the_version(known):
    assert known["postgresql"].datastore.package_for("15") == "postgresql-15"
    assert known["mariadb"].datastore.package_for("10.11") == "mariadb-server"


def test_mysql_is_container_only_with_trove_s_image_name(known):
    """[mysql] docker_image defaults to 'mysql' (trove/common/cfg.py); the
    image built here for 8.0 is the one the agent runs."""
    from trove.common import cfg
    from trove_image_builder.build import datastore_image
    info = known["mysql"].datastore
    assert info.runtimes == ("container",)
    assert info.docker_image == cfg.CONF.get("mysql").docker_image == "mysql"
    assert info.image_ref("8.0") == "mysql:8.0"
    assert info.image_ref("8.0") in datastore_image.known()


def test_elements_without_datastore_yaml_are_not_datastores(known):
    assert known["trove-guest"].datastore is None
    assert known["guest-agent"].datastore is None


# --------------------------------------------------------------------------
# discover()

def test_discover_finds_dibs_elements(known):
    assert known["vm"].origin == "dib"
    assert known["debian-minimal"].origin == "dib"
    assert known["vm"].datastore is None


def test_user_folder_shadows_dib_but_not_shipped(tmp_path):
    for name in ("vm", "mariadb", "mine", ".hidden", "_private"):
        (tmp_path / name).mkdir()
    (tmp_path / "not-an-element.txt").write_text("")
    found = elements.discover([str(tmp_path)])
    assert found["vm"].origin == "user" and found["vm"].path == tmp_path / "vm"
    assert found["mariadb"].origin == "shipped"
    assert found["mine"].origin == "user"
    assert found["mine"].description == ""
    for name in (".hidden", "_private", "not-an-element.txt"):
        assert name not in found


def test_discover_missing_folder(tmp_path):
    with pytest.raises(InputError) as info:
        elements.discover([str(tmp_path / "nope")])
    assert info.value.message == f"--elements-path {tmp_path / 'nope'}: no such folder"


@pytest.mark.parametrize("text", ["name: x\nruntimes: [package]\n", "[a, b]\n", "name: [\n"])
def test_invalid_datastore_yaml(tmp_path, text):
    (tmp_path / "bad").mkdir()
    spec = tmp_path / "bad" / "datastore.yaml"
    spec.write_text(text)
    with pytest.raises(InputError) as info:
        elements.discover([str(tmp_path)])
    assert info.value.message.startswith(f"{spec}: not a valid datastore description (")
    assert info.value.message.endswith(
        "); it needs name, runtimes, package, service, data_dir")


def test_user_datastore(tmp_path):
    folder = tmp_path / "redis"
    folder.mkdir()
    (folder / "README.rst").write_text("=====\nredis\n=====\n\nRedis for Trove.\n")
    (folder / "datastore.yaml").write_text(
        "name: redis\nruntimes: [package, container]\npackage: redis-server\n"
        "service: redis-server\ndata_dir: /var/lib/redis\n")
    found = elements.discover([str(tmp_path)])
    assert found["redis"].description == "Redis for Trove."
    assert found["redis"].datastore == DatastoreInfo(
        name="redis", runtimes=("package", "container"), package="redis-server",
        service="redis-server", data_dir="/var/lib/redis", query="")
    assert elements.datastores(found)["redis"].path == folder


def test_dib_lint_finds_nothing():
    """diskimage-builder's own linter over the shipped elements."""
    import shutil
    import subprocess
    import sys
    from pathlib import Path
    bin_dir = Path(sys.executable).parent
    lint = shutil.which("dib-lint", path=f"{bin_dir}:/usr/bin:/bin")
    if lint is None:
        pytest.skip("dib-lint (diskimage-builder) is not installed")
    repo = Path(__file__).resolve().parents[2]
    proc = subprocess.run([lint], cwd=repo, capture_output=True, text=True,
                          env={"PATH": f"{bin_dir}:/usr/bin:/bin", "ELEMENTS_DIR": "elements",
                               "LIB_DIR": "elements"})
    errors = [ln for ln in (proc.stdout + proc.stderr).splitlines() if ln.startswith("ERROR")]
    assert errors == []
