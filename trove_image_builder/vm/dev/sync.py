"""Push a Trove working tree into the development VM's agent.

The guest keeps a copy of the tree in GUEST_TREE. The first sync sends all
of it and installs it into the agent's virtualenv as an editable install
(``pip install --no-deps --no-index --no-build-isolation -e``: the guest has
no network; pbr and setuptools are in the agent's venv, and pbr takes the
version from PKG-INFO or, in a git checkout whose .git is not sent, from
PBR_VERSION), so that later syncs only send what changed (by size and
mtime against sync.json), remove what was deleted, and restart the agent.
The install runs again when the packaging files change. When
requirements.txt changes, the guest's pip says whether the venv still
satisfies it (offline); if not, the missing wheels are downloaded on the host
with the guest's own ``pip freeze`` as constraints (less the requirements
that changed) and installed in the guest from them.
"""
from dataclasses import dataclass, field
import json
import os
from pathlib import Path
import re
import shlex
import subprocess
import sys
import tarfile
import tempfile
import time

from ...errors import InputError, VerifyError
from ...plumbing import log
from . import state as state_mod
from .state import DevState

GUEST_TREE = "/var/lib/trove-dev/trove"
GUEST_WHEELS = "/var/lib/trove-dev/wheels"
SKIP_DIRS = {".git", ".tox", ".stestr", ".eggs", "__pycache__", ".mypy_cache",
             ".pytest_cache", ".venv"}
SKIP_SUFFIXES = (".pyc", ".pyo", ".swp", "~")
# these change what is installed (entry points, version, package data):
# the editable install runs again
PACKAGING = ("setup.cfg", "setup.py", "pyproject.toml", "PKG-INFO")
REQUIREMENTS = "requirements.txt"
TRANSFER_TIMEOUT = 600
INSTALL_TIMEOUT = 900


def check_tree(path) -> Path:
    """path as an absolute Path if it is a Trove source tree; InputError, one
    line, if not."""
    if not path:
        raise InputError("no Trove tree to sync: give --trove-src PATH (or to 'dev up')")
    tree = Path(path).expanduser().resolve()
    if not tree.is_dir():
        raise InputError(f"{tree}: no such folder (the Trove tree to sync)")
    setup = tree / "setup.cfg"
    name = None
    if setup.is_file():
        found = re.search(r"^name\s*=\s*(\S+)", setup.read_text(errors="replace"), re.M)
        name = found.group(1) if found else None
    if name != "trove" or not (tree / "trove" / "guestagent").is_dir():
        raise InputError(f"{tree}: not a Trove source tree (expected setup.cfg naming "
                         "'trove' and trove/guestagent/)")
    return tree


def scan(tree: Path) -> dict[str, list]:
    """Every file to keep in sync: relative path -> [size, mtime_ns]."""
    found = {}
    for root, dirs, files in os.walk(tree):
        dirs[:] = sorted(d for d in dirs if d not in SKIP_DIRS and not d.endswith(".egg-info"))
        for name in files:
            if name.endswith(SKIP_SUFFIXES):
                continue
            path = Path(root) / name
            try:
                stat = path.lstat()
            except OSError:
                continue
            found[path.relative_to(tree).as_posix()] = [stat.st_size, stat.st_mtime_ns]
    return found


@dataclass(frozen=True)
class SyncPlan:
    """What a sync does: the files to send and delete, whether the tree is
    installed again, whether the venv is checked against requirements.txt
    (it changed, or this is the first sync)."""
    send: tuple = ()
    delete: tuple = ()
    install: bool = False
    requirements: bool = False
    files: dict = field(default_factory=dict, repr=False)   # the scan it was made from

    @property
    def empty(self) -> bool:
        return not (self.send or self.delete or self.install)


def plan(tree: Path, previous: dict | None, installed: bool) -> SyncPlan:
    """Compare the tree with what the last sync sent (previous: sync.json's
    'files', None for a first sync); installed: the guest runs the editable
    install of GUEST_TREE already."""
    files = scan(tree)
    old = previous or {}
    send = tuple(sorted(p for p, meta in files.items() if old.get(p) != meta))
    delete = tuple(sorted(set(old) - set(files)))
    touched = set(send) | set(delete)
    install = not installed or previous is None or bool(touched & set(PACKAGING))
    # a first sync cannot know what the image was built with: the guest checks
    requirements = previous is None or REQUIREMENTS in touched
    return SyncPlan(send, delete, install, requirements, files)


def requirement_names(text: str) -> dict[str, str]:
    """requirements.txt: the normalised project name of each line -> the line."""
    found = {}
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line or line.startswith("-"):
            continue
        match = re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", line)
        if match:
            found[re.sub(r"[-_.]+", "-", match.group(0)).lower()] = " ".join(line.split())
    return found


def same_requirements(text: str, requires, python: str | None = None) -> bool:
    """requirements.txt asks for what the installed distribution's
    Requires-Dist (requires: importlib.metadata.requires) says, for the
    guest's Python (python: '3.11'): the lines whose markers hold there,
    without the extras' (pbr writes a marker that holds without it)."""
    from packaging.markers import default_environment
    from packaging.requirements import InvalidRequirement, Requirement
    from packaging.utils import canonicalize_name
    env = default_environment()
    if python:
        env["python_version"] = python

    def keys(reqs):
        return {(canonicalize_name(r.name), str(r.specifier), tuple(sorted(r.extras)))
                for r in reqs if r.marker is None or r.marker.evaluate(env)}
    try:
        wanted = keys(map(Requirement, requirement_names(text).values()))
        installed = keys(r for r in map(Requirement, requires or ())
                         if "extra" not in str(r.marker or ""))
    except InvalidRequirement:
        return False
    return bool(wanted) and wanted == installed


def changed_requirements(old_text: str, new_text: str) -> set[str]:
    """The projects whose requirement line was added or changed."""
    old, new = requirement_names(old_text), requirement_names(new_text)
    return {name for name, line in new.items() if old.get(name) != line}


def constraints(freeze: str, unpinned: set[str]) -> str:
    """The guest's pip freeze as constraints, without the projects in
    unpinned and without editable installs (the agent itself)."""
    lines = []
    for line in freeze.splitlines():
        line = line.strip()
        if not line or line.startswith(("-e", "#")) or " @ " in line or "==" not in line:
            continue
        name = re.sub(r"[-_.]+", "-", line.split("==", 1)[0]).lower()
        if name not in unpinned and name != "trove":
            lines.append(line)
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------
# In the guest

def _ssh(st: DevState, script: str, timeout: float, what: str) -> str:
    proc = st.guest().ssh(script, timeout=timeout)
    if proc.returncode != 0:
        said = (proc.stderr.strip() or proc.stdout.strip()).splitlines()[-3:]
        raise VerifyError(f"{what} failed in the guest (exit {proc.returncode}): "
                          + " / ".join(said))
    return proc.stdout


def send_files(st: DevState, base: Path, names, dest: str, delete=(),
               timeout: float = TRANSFER_TIMEOUT) -> int:
    """tar (gzip) of base's names over ssh into dest, as root; delete
    removes those names there. Returns the bytes sent."""
    script = f"sudo mkdir -p {shlex.quote(dest)} && sudo tar -C {shlex.quote(dest)} " \
             "--no-same-owner -xzf -"
    if delete:
        script += f" && cd {shlex.quote(dest)} && sudo rm -f -- " + " ".join(
            shlex.quote(name) for name in delete)
    with tempfile.TemporaryFile() as archive:
        with tarfile.open(fileobj=archive, mode="w:gz", compresslevel=3) as tar:
            for name in names:
                tar.add(base / name, arcname=name, recursive=False)
        size = archive.tell()
        archive.seek(0)
        proc = subprocess.run(st.guest().ssh_argv(script), stdin=archive,
                              capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        said = proc.stderr.strip().splitlines()[-2:]
        raise VerifyError(f"sending the tree to the guest failed (exit {proc.returncode}): "
                          + " / ".join(said))
    return size


def pip_env(tree: Path, installed_version: str | None) -> str:
    """PBR_VERSION for pbr when the tree has no PKG-INFO (a git checkout:
    its .git is not sent)."""
    if (tree / "PKG-INFO").is_file():
        return ""
    return f"PBR_VERSION={shlex.quote(installed_version or '0.0.0')} "


def install_command(st: DevState, env: str) -> str:
    pip = f"{st.agent_venv}/bin/pip"
    return (f"cd / && sudo env {env}{pip} install -q --disable-pip-version-check --no-deps "
            f"--no-index --no-build-isolation -e {GUEST_TREE}")


def agent_install(st: DevState) -> dict:
    """The guest's agent: its version, its requirements (Requires-Dist) and
    whether it is the editable install of GUEST_TREE."""
    python = f"{st.agent_venv}/bin/python"
    code = ("import importlib.metadata as m, json, sys; d = m.distribution('trove'); "
            "print(json.dumps({'version': d.version, 'direct_url': d.read_text("
            "'direct_url.json'), 'requires': d.requires, "
            "'python': '%d.%d' % sys.version_info[:2]}))")
    found = json.loads(_ssh(st, f"{python} -c {shlex.quote(code)}", 120,
                            "reading the agent's install").strip().splitlines()[-1])
    url = json.loads(found.get("direct_url") or "{}")
    found["editable"] = (url.get("url") == f"file://{GUEST_TREE}"
                         and url.get("dir_info", {}).get("editable", False))
    return found


def ensure_requirements(st: DevState, tree: Path, old_text: str) -> str:
    """Make the agent's venv satisfy the tree's requirements.txt; say what
    was done."""
    pip = f"{st.agent_venv}/bin/pip"
    check = st.guest().ssh(f"cd / && {pip} install --dry-run -q --disable-pip-version-check "
                           f"--no-index -r {GUEST_TREE}/{REQUIREMENTS}", timeout=300)
    if check.returncode == 0:
        return "satisfied by the agent's venv"
    freeze = _ssh(st, f"{pip} freeze --disable-pip-version-check", 120, "pip freeze")
    new_text = (tree / REQUIREMENTS).read_text()
    wheels = st.folder / "wheels"
    wheels.mkdir(exist_ok=True)
    for old in wheels.iterdir():
        old.unlink()
    (wheels / "constraints.txt").write_text(
        constraints(freeze, changed_requirements(old_text, new_text)))
    argv = [sys.executable, "-m", "pip", "download", "-q", "--disable-pip-version-check",
            "-d", str(wheels), "-r", str(tree / REQUIREMENTS),
            "-c", str(wheels / "constraints.txt")]
    log.info("downloading what the guest lacks: " + " ".join(shlex.quote(a) for a in argv))
    got = subprocess.run(argv, capture_output=True, text=True, timeout=INSTALL_TIMEOUT)
    if got.returncode != 0:
        said = got.stderr.strip().splitlines()[-1:] or ["no output"]
        raise VerifyError(f"requirements.txt changed and the guest lacks some of it; "
                          f"downloading on the host failed: {said[0]}")
    names = sorted(p.name for p in wheels.iterdir())
    send_files(st, wheels, names, GUEST_WHEELS)
    _ssh(st, f"cd / && sudo {pip} install -q --disable-pip-version-check --no-index "
             f"--find-links {GUEST_WHEELS} -r {GUEST_TREE}/{REQUIREMENTS} "
             f"-c {GUEST_WHEELS}/constraints.txt && sudo rm -rf {GUEST_WHEELS}",
         INSTALL_TIMEOUT, "installing the new requirements")
    return f"installed from {len(names) - 1} downloaded file(s)"


# --------------------------------------------------------------------------
# The whole sync

def _read_sync(folder: Path) -> dict:
    path = folder / state_mod.SYNC_FILE
    try:
        return json.loads(path.read_text()) if path.is_file() else {}
    except ValueError:
        return {}


def _write_sync(folder: Path, record: dict) -> None:
    (folder / state_mod.SYNC_FILE).write_text(json.dumps(record))


def sync(st: DevState, tree_path=None, restart: bool = True) -> dict:
    """Send the tree's changes, install if needed, restart the agent, wait
    for its answer. Returns what was sent and the timings."""
    from .machine import wait_for_agent
    tree = check_tree(tree_path or st.trove_src)
    done = _read_sync(st.folder)
    same_tree = done.get("tree") == str(tree)
    previous = done.get("files") if same_tree else None
    the_plan = plan(tree, previous, installed=same_tree and done.get("installed", False))
    seconds = {}
    result = {"tree": str(tree), "sent": len(the_plan.send), "deleted": list(the_plan.delete),
              "files": list(the_plan.send[:50]), "bytes": 0, "installed": False,
              "requirements": None, "seconds": seconds}
    if the_plan.empty and not restart:
        return result
    start = time.monotonic()
    with log.step(f"send {len(the_plan.send)} file(s), delete {len(the_plan.delete)} "
                  f"(tar over ssh into {GUEST_TREE})", seconds, "transfer"):
        if the_plan.send or the_plan.delete:
            result["bytes"] = send_files(st, tree, the_plan.send, GUEST_TREE,
                                         the_plan.delete)
    # what the guest holds now, recorded before the steps that may fail: an
    # install not done yet is marked so, and requirements.txt not checked yet
    # is left out (the next sync sends it again and checks)
    record = {"tree": str(tree), "files": dict(the_plan.files),
              "installed": not the_plan.install,
              "requirements": done.get("requirements") if same_tree else None}
    if the_plan.requirements:
        record["files"].pop(REQUIREMENTS, None)
    _write_sync(st.folder, record)
    found = {}
    if the_plan.install:
        with log.step(f"install {GUEST_TREE} into {st.agent_venv} (editable, no deps)",
                      seconds, "install"):
            found = agent_install(st)
            _ssh(st, install_command(st, pip_env(tree, found.get("version"))),
                 INSTALL_TIMEOUT, "the editable install")
        result["installed"] = True
    has_requirements = (tree / REQUIREMENTS).is_file()
    new_requirements = (tree / REQUIREMENTS).read_text() if has_requirements else ""
    if the_plan.requirements and has_requirements and found and not found["editable"] \
            and same_requirements(new_requirements, found.get("requires"),
                                  found.get("python")):
        # the image's own install of the agent (not an editable one: those
        # are made with --no-deps), with the same requirements: its venv was
        # resolved for them when the image was built, no pip run is needed
        result["requirements"] = "the same as the image's install of the agent"
    elif the_plan.requirements and has_requirements:
        with log.step("check the agent's venv against requirements.txt", seconds,
                      "requirements"):
            # unknown before (a first sync): every pin of the guest stays
            old = record["requirements"] if record["requirements"] is not None \
                else new_requirements
            result["requirements"] = ensure_requirements(st, tree, old)
    record.update(files=the_plan.files, installed=True, requirements=new_requirements)
    _write_sync(st.folder, record)
    if restart:
        result["seconds"].update(restart_agent(st, wait_for_agent))
    seconds["total"] = round(time.monotonic() - start, 1)
    return result


def restart_agent(st: DevState, wait_for_agent) -> dict:
    """Restart the agent's unit; seconds to restart and to its first answer."""
    seconds = {}
    with log.step(f"restart {st.agent_unit}", seconds, "restart"):
        _ssh(st, f"sudo systemctl restart {st.agent_unit}", 300, "restarting the agent")
    seconds["first_answer"] = wait_for_agent(st, "wait for the agent's answer to rpc_ping")
    return seconds
