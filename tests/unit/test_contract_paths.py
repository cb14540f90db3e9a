"""In-image paths are named once: elements/trove-guest/environment.d/
05-trove-paths.bash. The element scripts use its variables, the files that
cannot (static units and boot scripts) agree with it, and the Python side
reads it."""
from pathlib import Path
import re

import pytest

from trove_image_builder import shipped_dir
from trove_image_builder.contract import paths
from trove_image_builder.errors import InputError

ELEMENTS = shipped_dir("elements")
PACKAGE = Path(paths.__file__).resolve().parents[1]
SCRIPT_PHASES = ("environment.d", "extra-data.d", "pre-install.d", "install.d",
                 "post-install.d", "finalise.d")


def literal(value: str) -> re.Pattern:
    # the path itself, not a longer one it is the start of (/etc/trove vs /etc/trove/certs)
    return re.compile(re.escape(value) + r"(?![A-Za-z0-9._/-])")


def test_the_file_parses_into_every_path():
    found = paths.current()
    assert found.agent_venv == "/opt/guest-agent-venv"
    assert found.guest_info == "/etc/trove/conf.d/guest_info.conf"
    assert set(paths.variables()) == {
        "TROVE_PATH_CONF", "TROVE_PATH_INJECTED", "TROVE_PATH_CERTS", "TROVE_PATH_STATE",
        "TROVE_PATH_LOG", "TROVE_PATH_AGENT_VENV", "TROVE_UNIT_AGENT",
        "TROVE_PATH_CERT_STAGING", "TROVE_PATH_IMAGES", "TROVE_PATH_DEV_MARKER",
        "TROVE_PATH_AGENT_STATE"}


@pytest.mark.parametrize("text, error", [
    ("export TROVE_PATH_CONF=/etc/trove\n", "TROVE_PATH_INJECTED is not set"),
    ("TROVE_PATH_CONF=/etc/trove\n", "line 1: expected 'export TROVE_PATH_NAME=/path'"),
    ("export TROVE_PATH_CONF=$(rm -rf /)\n", "line 1: expected"),
])
def test_bad_paths_files_are_refused(text, error):
    with pytest.raises(InputError, match=re.escape(error)):
        paths.parse(text, "f.bash")


def test_an_unknown_name_is_refused():
    text = (ELEMENTS / "trove-guest/environment.d/05-trove-paths.bash").read_text()
    with pytest.raises(InputError, match="unknown name.s. TROVE_PATH_EXTRA"):
        paths.parse(text + "export TROVE_PATH_EXTRA=/x\n", "f.bash")


def element_scripts():
    for phase in SCRIPT_PHASES:
        for script in sorted(ELEMENTS.glob(f"*/{phase}/*")):
            if script.name != "05-trove-paths.bash":
                yield script


@pytest.mark.parametrize("name", [n for n in paths.current().to_dict() if n != "conf"])
def test_element_scripts_use_the_variables_not_the_paths(name):
    value = getattr(paths.current(), name)
    found = [str(s.relative_to(ELEMENTS)) for s in element_scripts()
             if literal(value).search(s.read_text())]
    assert not found, f"{value} written out in {found}: use ${paths.variables()}"


@pytest.mark.parametrize("name", paths.current().to_dict())
def test_python_side_names_no_in_image_path(name):
    value = getattr(paths.current(), name)
    found = [str(f.relative_to(PACKAGE)) for f in sorted(PACKAGE.rglob("*.py"))
             if f.parent.name != "contract" and literal(value).search(
                 "\n".join(ln for ln in f.read_text().splitlines()
                           if not ln.lstrip().startswith("#")))]
    # docstrings may mention them; code takes them from the contract
    code = [f for f in found if literal(value).search(
        re.sub(r'"""[\s\S]*?"""', "", (PACKAGE / f).read_text()))]
    assert not code, f"{value} written out in {code}: use contract.paths"


def test_static_files_agree_with_the_contract():
    """Units and boot scripts cannot read environment.d: they must say the
    same as it does."""
    p = paths.current()
    agent = (ELEMENTS / "guest-agent/static/etc/systemd/system" / p.agent_unit).read_text()
    assert f"ExecStart={p.agent_venv}/bin/trove-guestagent --config-dir={p.injected}" in agent
    assert f"ConditionPathExists={p.guest_info}" in agent
    hostnic = (ELEMENTS / "guest-agent/static/etc/systemd/system/docker-hostnic.service")
    assert f"ExecStart={p.agent_venv}/bin/trove-docker-plugin" in hostnic.read_text()
    preload = ELEMENTS / "container-engine/static"
    assert f"dir={p.images}\n" in (preload / "usr/local/sbin/trove-preload-images").read_text()
    unit = (preload / "etc/systemd/system/trove-preload-images.service").read_text()
    assert f"ConditionPathExists={p.images}/images.list" in unit
    assert f"Before={p.agent_unit}" in unit
    hook = (ELEMENTS / "trove-certs/static/usr/local/sbin/trove-certs").read_text()
    assert f'staging: str = "{p.cert_staging}"' in hook
    assert f'cert_dir: str = "{p.certs}"' in hook
    assert f'agent_conf: str = "{p.injected}/zz-trove-certs.conf"' in hook
    certs_unit = (ELEMENTS / "trove-certs/static/etc/systemd/system/trove-certs.service")
    assert f"Before={p.agent_unit}" in certs_unit.read_text()
