"""Apply elements to an image in a chroot, as DIB would in its own build:
the way an upper layer is made (build/layers.py).

The elements' folders are merged into one hooks folder as DIB merges them
(``disk-image-create``: every element's phase folders side by side, so a
phase's scripts from all elements run in name order). Then, as DIB does:
``extra-data.d`` on the host with ``TMP_HOOKS_PATH``; the hooks copied to
``/tmp/in_target.d`` of the mounted root; ``pre-install.d``,
``install.d``, ``post-install.d`` and ``finalise.d`` in the chroot with
every ``environment.d`` file sourced first. Two of DIB's helper elements are
played here: ``package-installs`` (each element's package-installs.yaml,
its ``when`` conditions and ``phase``; packages already installed are
skipped, so apt runs only when something is missing) and ``install-static``
(the ``static`` folders, copied at the start of install.d, as its
10-install-static-files does). During the run the chroot has the host's
resolv.conf and a policy-rc.d that keeps services from starting; both are
put back. Last, the image is generalised again with trove-guest's own
finalise script (no ssh host keys, no apt lists)."""
import os
from pathlib import Path
import shlex
import shutil
import signal
import subprocess

import yaml

from .cache import cache_dir
from ..errors import BuildError, InputError
from ..plumbing import imagefs, log
from ..plumbing.runner import replay_line

PHASES_IN_TARGET = ("pre-install.d", "install.d", "post-install.d", "finalise.d")
MERGED = ("environment.d", "extra-data.d", *PHASES_IN_TARGET, "static")
GENERALISE = "trove-guest/finalise.d/90-trove-guest-generalise"
# The host's pip cache, bound here for a layer that installs the guest agent
# (elements/guest-agent/install.d/60-guest-agent uses it when mounted) and
# unmounted and removed before the image is closed.
PIP_CACHE_IN_TARGET = "tmp/pip-cache"


def pip_cache_dir() -> Path:
    return cache_dir() / "pip"


def merge_hooks(folders: dict[str, Path], dest: Path) -> None:
    """Every element's phase folders, environment.d and static merged into
    dest, in the given order (a later element's same-named file wins)."""
    for name, folder in folders.items():
        for sub in MERGED:
            src = folder / sub
            if src.is_dir():
                shutil.copytree(src, dest / sub, symlinks=True, dirs_exist_ok=True)


def _condition_holds(cond: str, env: dict, where: str) -> bool:
    for op in ("!=", "="):
        if op in cond:
            var, _, value = (s.strip() for s in cond.partition(op))
            have = env.get(var, "")
            return have != value if op == "!=" else have == value
    raise InputError(f"{where}: 'when: {cond}' is not VAR = value or VAR != value")


def packages_by_phase(folders: dict[str, Path], env: dict) -> dict[str, list[str]]:
    """What the elements' package-installs.yaml ask for, by phase."""
    wanted: dict[str, list[str]] = {}
    for name, folder in folders.items():
        spec = folder / "package-installs.yaml"
        if not spec.is_file():
            continue
        where = str(spec)
        data = yaml.safe_load(spec.read_text()) or {}
        for pkg, opts in data.items():
            opts = opts or {}
            unknown = set(opts) - {"when", "phase"}
            if unknown:
                raise InputError(f"{where}: {pkg}: {', '.join(sorted(unknown))} is not "
                                 "supported in an upper layer; drop it or build the "
                                 "element in the base layer")
            conds = opts.get("when", [])
            conds = [conds] if isinstance(conds, str) else conds
            if all(_condition_holds(c, env, where) for c in conds):
                wanted.setdefault(opts.get("phase", "install.d"), []).append(pkg)
    return wanted


def target_script(packages: dict[str, list[str]], has_static: bool) -> str:
    """The bash program run in the chroot."""
    lines = [
        "#!/bin/bash",
        "set -eu",
        "set -o pipefail",
        "export DEBIAN_FRONTEND=noninteractive",
        "hooks=/tmp/in_target.d",
        "for f in $(find $hooks/environment.d -maxdepth 1 -type f 2>/dev/null | sort); do",
        "    # shellcheck disable=SC1090",
        '    set +u; source "$f"; set -u',
        "done",
        "updated=0",
        "need() {",
        '    local missing=()',
        '    for p in "$@"; do',
        "        dpkg-query -W -f='${Status}' \"$p\" 2>/dev/null | grep -q ' installed$' "
        '|| missing+=("$p")',
        "    done",
        '    [ ${#missing[@]} -gt 0 ] || return 0',
        '    if [ $updated = 0 ]; then apt-get -q update; updated=1; fi',
        '    echo "layer: install ${missing[*]}"',
        '    apt-get -q -y install --no-install-recommends "${missing[@]}"',
        "}",
        "run_phase() {",
        '    local phase=$1',
        '    [ -d "$hooks/$phase" ] || return 0',
        '    for s in $(find "$hooks/$phase" -maxdepth 1 -type f -perm -u+x | sort); do',
        '        echo "layer: $phase/$(basename "$s")"',
        '        "$s"',
        "    done",
        "}",
    ]
    for phase in PHASES_IN_TARGET:
        pkgs = packages.get(phase)
        if pkgs:
            lines.append("need " + " ".join(shlex.quote(p) for p in pkgs))
        if phase == "install.d" and has_static:
            lines.append('echo "layer: static files"; rsync -lCr "$hooks/static/" /')
        lines.append(f"run_phase {phase}")
    lines.append('[ ! -x "$hooks/generalise" ] || "$hooks/generalise"')
    return "\n".join(lines) + "\n"


def host_script() -> str:
    """The bash program that runs extra-data.d on the build host."""
    return "\n".join([
        "#!/bin/bash",
        "set -eu",
        "set -o pipefail",
        'for f in $(find "$TMP_HOOKS_PATH/environment.d" -maxdepth 1 -type f 2>/dev/null '
        "| sort); do",
        "    # shellcheck disable=SC1090",
        '    set +u; source "$f"; set -u',
        "done",
        'for s in $(find "$TMP_HOOKS_PATH/extra-data.d" -maxdepth 1 -type f -perm -u+x '
        "2>/dev/null | sort); do",
        '    echo "layer: extra-data.d/$(basename "$s")"',
        '    "$s"',
        "done",
    ]) + "\n"


def _clean_env(env: dict) -> dict:
    base = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    base.update({k: str(v) for k, v in env.items()})
    base.setdefault("DIB_DEBUG_TRACE", "0")
    return base


def _run_logged(argv, env: dict, logf, what: str) -> None:
    """Run argv in a process group of its own: on an interrupt the whole
    group goes (pip and its children too), so nothing keeps the mounted
    image busy."""
    logf.write(f"# {replay_line(argv)}\n")
    logf.flush()
    proc = subprocess.Popen([str(a) for a in argv], env=env, stdout=logf,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        proc.wait()
    except BaseException:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(proc.pid, sig)
                proc.wait(timeout=10)
                break
            except ProcessLookupError:
                break
            except subprocess.TimeoutExpired:
                continue
        raise
    if proc.returncode != 0:
        raise BuildError(f"{what} failed with exit code {proc.returncode}; "
                         f"full log: {logf.name}")


def _mount(kind_args: list, target: Path, undo: list) -> None:
    target.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", *kind_args, str(target)], check=True, capture_output=True)
    undo.append(target)


def apply(image: Path, layer_name: str, folders: dict[str, Path],
          env_folders: dict[str, Path], env: dict, workdir: Path, log_path: Path) -> None:
    """Run the elements in folders (name -> folder, in order) on image (a
    qcow2 overlay, changed in place). env_folders: every element of the
    build whose environment.d is sourced (DIB's own excepted: they describe
    DIB's build, which is over); env: the variables the elements get."""
    hooks = workdir / f"hooks-{layer_name}"
    shutil.rmtree(hooks, ignore_errors=True)
    hooks.mkdir(parents=True)
    for folder in env_folders.values():
        if (folder / "environment.d").is_dir():
            shutil.copytree(folder / "environment.d", hooks / "environment.d",
                            symlinks=True, dirs_exist_ok=True)
    merge_hooks(folders, hooks)
    generalise = env_folders.get("trove-guest", Path("/nonexistent")) / \
        "finalise.d/90-trove-guest-generalise"
    if generalise.is_file():
        shutil.copy2(generalise, hooks / "generalise")
    packages = packages_by_phase(folders, env)
    (hooks / "run").write_text(target_script(packages, (hooks / "static").is_dir()))
    (hooks / "run").chmod(0o755)
    (workdir / f"extra-data-{layer_name}").write_text(host_script())
    full_env = _clean_env({**env, "TMP_HOOKS_PATH": str(hooks)})
    with open(log_path, "a", encoding="utf-8") as logf:
        logf.write(f"\n# layer {layer_name}: {' '.join(folders)}\n")
        with imagefs.mounted(image, writable=True) as root:
            full_env["TARGET_ROOT"] = str(root)
            _run_logged(["bash", workdir / f"extra-data-{layer_name}"], full_env, logf,
                        f"layer {layer_name}: extra-data.d")
            _in_chroot(root, hooks, full_env, logf, layer_name,
                       pip_cache="guest-agent" in folders)


def _in_chroot(root: Path, hooks: Path, env: dict, logf, layer_name: str,
               pip_cache: bool = False) -> None:
    undo: list[Path] = []
    resolv = root / "etc/resolv.conf"
    saved = root / "etc/.resolv.conf.layer-saved"
    policy = root / "usr/sbin/policy-rc.d"
    had_policy = policy.exists()
    target_hooks = root / "tmp/in_target.d"
    try:
        if resolv.exists() or resolv.is_symlink():
            os.replace(resolv, saved)
        shutil.copy("/etc/resolv.conf", resolv)
        if not had_policy:
            policy.write_text("#!/bin/sh\nexit 101\n")
            policy.chmod(0o755)
        _mount(["-t", "proc", "proc"], root / "proc", undo)
        _mount(["-t", "sysfs", "sysfs"], root / "sys", undo)
        _mount(["--bind", "/dev"], root / "dev", undo)
        _mount(["--bind", "/dev/pts"], root / "dev/pts", undo)
        if pip_cache:
            pip_cache_dir().mkdir(parents=True, exist_ok=True)
            _mount(["--bind", str(pip_cache_dir())], root / PIP_CACHE_IN_TARGET, undo)
        shutil.rmtree(target_hooks, ignore_errors=True)
        shutil.copytree(hooks, target_hooks, symlinks=True)
        chroot_env = {k: v for k, v in env.items()
                      if k not in ("TMP_HOOKS_PATH", "TARGET_ROOT", "TMPDIR")}
        chroot_env["PATH"] = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
        chroot_env["HOME"] = "/root"
        log.info(f"run {layer_name}'s phases in a chroot")
        _run_logged(["chroot", root, "/tmp/in_target.d/run"], chroot_env, logf,
                    f"layer {layer_name}: the elements' phases")
    finally:
        for target in reversed(undo):
            if subprocess.run(["umount", str(target)], capture_output=True).returncode:
                subprocess.run(["umount", "-l", str(target)], capture_output=True)
        if pip_cache:
            # only an empty mount point: never the cache's files
            try:
                (root / PIP_CACHE_IN_TARGET).rmdir()
            except OSError:
                pass
        shutil.rmtree(target_hooks, ignore_errors=True)
        if not had_policy:
            policy.unlink(missing_ok=True)
        resolv.unlink(missing_ok=True)
        if saved.exists() or saved.is_symlink():
            os.replace(saved, resolv)
