"""What the virt-customize backend does to the guest: the hooks folder (made
on the host, where the extra-data.d scripts run, as in DIB) and, in one
libguestfs appliance launch, the static files, the phases with their package
installs and removals, and the generalisation."""
import os
from pathlib import Path
import shlex
import shutil
import subprocess
import tarfile
import time

from ...plumbing import log
from ...errors import BuildError
from .virt_customize_plan import GUEST_PHASES, package_steps, phase_scripts

IN_TARGET = "/tmp/in_target.d"

INSTALL_PACKAGES = """#!/bin/bash
# install-packages for elements run by the virt-customize backend.
set -eu
set -o pipefail
export DEBIAN_FRONTEND=noninteractive
[ -f /tmp/in_target.d/.apt-updated ] || { apt-get -q update; touch /tmp/in_target.d/.apt-updated; }
apt-get -y -q install --no-install-recommends "$@"
"""

GENERALISE = """set -eu
: > /etc/machine-id
rm -f /var/lib/dbus/machine-id /etc/ssh/ssh_host_*
rm -rf /var/lib/cloud/instances /var/lib/cloud/instance /var/lib/cloud/data /var/lib/cloud/sem
apt-get clean
rm -rf /var/lib/apt/lists/* /root/.cache /tmp/in_target.d
"""


def guest_script(phase: str, scripts, installs, uninstalls) -> str:
    """The shell script that runs one phase inside the guest: the elements'
    scripts and, where DIB's package-installs element has its own scripts
    in the phase, the package installs and removals."""
    lines = ["set -eu", "set -o pipefail",
             f"export PATH={IN_TARGET}/bin:/usr/local/sbin:/usr/local/bin:"
             "/usr/sbin:/usr/bin:/sbin:/bin",
             "export DEBIAN_FRONTEND=noninteractive",
             f"set -a; . {IN_TARGET}/environment; set +a"]
    steps = [(name, "script") for name, _path in scripts]
    if installs or uninstalls:
        install_step, removal_step = package_steps()[phase]
        steps += [(install_step, "install")] if installs else []
        steps += [(removal_step, "remove")] if uninstalls else []
    for name, kind in sorted(steps):
        lines.append(f"echo '>> {phase}/{name}'")
        if kind == "script":
            lines.append(f"{IN_TARGET}/{phase}/{shlex.quote(name)}")
        elif kind == "install":
            lines.append("install-packages " + " ".join(shlex.quote(p) for p in installs))
        else:
            lines.append("apt-get -y -q purge " + " ".join(shlex.quote(p) for p in uninstalls))
            lines.append("apt-get -y -q autoremove --purge")
    return "\n".join(lines) + "\n"


def make_hooks(own, env: dict, workdir: Path, logf) -> Path:
    """The hooks folder: phase scripts, environment, and what the
    extra-data.d scripts (run here, on the host) put there."""
    hooks = workdir / "hooks"
    (hooks / "bin").mkdir(parents=True)
    for element in own:
        for phase in GUEST_PHASES:
            folder = element.path / phase
            if folder.is_dir():
                dest = hooks / phase
                dest.mkdir(exist_ok=True)
                for script in folder.iterdir():
                    shutil.copy2(script, dest / script.name)
    (hooks / "bin" / "install-packages").write_text(INSTALL_PACKAGES)
    (hooks / "environment").write_text(
        "".join(f"{k}={shlex.quote(v)}\n" for k, v in sorted(env.items())))
    for name, script in phase_scripts(own, "extra-data.d"):
        logf.write(f">> extra-data.d/{name}\n")
        logf.flush()
        proc = subprocess.run([str(script)], env={**os.environ, **env,
                                                  "TMP_HOOKS_PATH": str(hooks)},
                              stdout=logf, stderr=subprocess.STDOUT)
        if proc.returncode != 0:
            raise BuildError(f"extra-data.d/{name} failed (exit {proc.returncode})")
    return hooks


def _root_owned(info: tarfile.TarInfo) -> tarfile.TarInfo:
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    return info


def apply(g, own, actions: dict, hooks: Path, logf) -> None:
    """Everything inside one appliance launch (the disk already added);
    actions: the packages to install and remove, by phase."""
    roots = g.inspect_os()
    if not roots:
        raise BuildError("libguestfs found no operating system in the base image")
    root = roots[0]
    mounts = g.inspect_get_mountpoints(root)
    for mountpoint in sorted(mounts, key=len):
        g.mount(mounts[mountpoint], mountpoint)
    # name resolution for the build (the appliance's user-mode network)
    if g.is_file("/etc/resolv.conf") or g.is_symlink("/etc/resolv.conf"):
        g.rename("/etc/resolv.conf", "/etc/resolv.conf.tib-saved")
    g.write("/etc/resolv.conf", "nameserver 10.0.2.3\nnameserver 169.254.2.3\n")

    tarball = hooks.parent / "hooks.tar"
    with tarfile.open(tarball, "w") as tar:
        tar.add(hooks, arcname=".")
    g.mkdir_p(IN_TARGET)
    g.tar_in(str(tarball), IN_TARGET)
    g.chmod(0o755, f"{IN_TARGET}/bin/install-packages")

    statics = hooks.parent / "static.tar"
    with tarfile.open(statics, "w") as tar:
        for element in own:
            static = element.path / "static"
            if static.is_dir():
                # as DIB's install-static: root-owned, existing folders kept
                for child in sorted(static.iterdir()):
                    tar.add(child, arcname=child.name, filter=_root_owned)
    g.tar_in(str(statics), "/")

    for phase in GUEST_PHASES:
        act = actions.get(phase, {"install": [], "uninstall": []})
        scripts = phase_scripts(own, phase)
        if not scripts and not act["install"] and not act["uninstall"]:
            continue
        start = time.monotonic()
        log.info(f"phase {phase} ({len(scripts)} scripts)")
        g.write(f"{IN_TARGET}/run-{phase}", guest_script(
            phase, scripts, act["install"], act["uninstall"]))
        sh(g, f"bash {IN_TARGET}/run-{phase}", phase, logf)
        logf.write(f"# {phase}: {time.monotonic() - start:.1f} s\n")

    # generalise, and give the image back its own resolv.conf
    sh(g, GENERALISE, "generalise", logf)
    g.rm_f("/tmp/tib-step.log")
    g.rm_f("/etc/resolv.conf")
    if g.exists("/etc/resolv.conf.tib-saved") or g.is_symlink("/etc/resolv.conf.tib-saved"):
        g.rename("/etc/resolv.conf.tib-saved", "/etc/resolv.conf")


def sh(g, script: str, what: str, logf) -> None:
    """Run script in the guest; its output goes to the log."""
    wrapped = f"( {script} ) > /tmp/tib-step.log 2>&1; rc=$?; cat /tmp/tib-step.log; exit $rc"
    try:
        out = g.sh(wrapped)
        logf.write(out)
    except RuntimeError as exc:
        try:
            logf.write(g.cat("/tmp/tib-step.log"))
        except RuntimeError:
            pass
        logf.flush()
        raise BuildError(f"{what} failed in the guest: {str(exc).strip()[-300:]}") from exc
    finally:
        logf.flush()
