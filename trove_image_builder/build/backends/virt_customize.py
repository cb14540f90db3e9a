"""The virt-customize backend: the same elements, applied with libguestfs to
a base disk image instead of built by diskimage-builder.

The base image (the OS and DIB's own elements) is built once by the DIB
backend and cached, keyed by a hash of what made it. A build then:

1. makes a qcow2 overlay on the cached base (the base is never written);
2. resolves the plan's own elements (``elements/`` and --elements-path) with
   their element-deps, and refuses any phase it cannot run in a guest;
3. runs the ``extra-data.d`` scripts on the host, as DIB does, into a hooks
   folder, and copies that folder into the guest as ``/tmp/in_target.d``;
4. in one libguestfs appliance launch: sources ``environment.d``, installs
   ``package-installs.yaml`` at their phase, copies ``static/`` files, runs
   ``pre-install.d``, ``install.d``, ``post-install.d`` and ``finalise.d``
   in DIB's order (all elements' scripts of a phase sorted by name), then
   generalises the image (machine-id, ssh host keys, cloud-init state,
   package caches);
5. flattens and compresses the overlay into the output image.
"""
import dataclasses
import hashlib
import json
import os
from pathlib import Path
import re
import shlex
import shutil
import subprocess
import tarfile
import tempfile
import time

import yaml

from ... import elements as elements_mod
from ...plumbing import host, log
from ...errors import BuildError, HostError, InputError
from ..plan import BuildPlan
from ...plumbing.runner import run

# Phases run inside the guest, in DIB's order.
GUEST_PHASES = ("pre-install.d", "install.d", "post-install.d", "finalise.d")
HOST_PHASES = ("extra-data.d",)
# Phases that need DIB's own machinery (the build root, the block device).
REFUSED_PHASES = ("root.d", "post-root.d", "block-device.d", "pre-finalise.d", "cleanup.d")
# DIB elements that only shape the DIB build itself, or come with the base.
BASE_ONLY = ("vm", "block-device-mbr", "block-device-gpt", "block-device-efi")
IN_TARGET = "/tmp/in_target.d"


class PhaseRefused(InputError):
    """An element has a phase this backend cannot run."""


def _element_deps(element) -> list[str]:
    deps = element.path / "element-deps"
    if not deps.is_file():
        return []
    return [ln.strip() for ln in deps.read_text().splitlines()
            if ln.strip() and not ln.startswith("#")]


def resolve(plan_elements, known) -> tuple[list, list]:
    """(own elements to apply, DIB elements for the base), deps included."""
    own, dib, seen = [], [], set()

    def visit(name):
        if name in seen:
            return
        seen.add(name)
        element = known.get(name)
        if element is None:
            raise InputError(f"element '{name}' not found (element-deps of the plan)")
        if element.origin == "dib":
            # DIB resolves its own elements' dependencies when it builds the base
            dib.append(element)
            return
        for dep in _element_deps(element):
            visit(dep)
        own.append(element)

    for name in plan_elements:
        visit(name)
    return own, dib


def refuse_unrunnable(own) -> None:
    for element in own:
        for phase in REFUSED_PHASES:
            folder = element.path / phase
            if folder.is_dir() and any(folder.iterdir()):
                raise PhaseRefused(
                    f"element {element.name}: phase {phase} cannot run on the virt-customize "
                    f"backend (it needs diskimage-builder's build root); use --backend dib")


def phase_scripts(own, phase: str) -> list[tuple[str, Path]]:
    """(script name, path) of a phase, across elements, in DIB's order."""
    scripts = []
    for element in own:
        folder = element.path / phase
        if folder.is_dir():
            for script in folder.iterdir():
                if script.is_file() and os.access(script, os.X_OK):
                    scripts.append((script.name, script))
    return sorted(scripts, key=lambda item: item[0])


def _when_holds(condition: str, env: dict) -> bool:
    for op in ("!=", "="):
        if op in condition:
            var, value = (part.strip() for part in condition.split(op, 1))
            if var not in env:
                raise InputError(f"package-installs: 'when: {condition}' names {var}, "
                                 "which no environment.d or profile sets")
            return (env[var] == value) == (op == "=")
    raise InputError(f"package-installs: cannot read 'when: {condition}'")


def package_actions(own, env: dict) -> dict:
    """{phase: {"install": [...], "uninstall": [...]}}, plus build-only
    packages to remove at the end (phase "cleanup")."""
    actions: dict = {}
    for element in own:
        spec = element.path / "package-installs.yaml"
        if not spec.is_file():
            continue
        data = yaml.safe_load(spec.read_text()) or {}
        for package, opts in data.items():
            opts = opts or {}
            if "when" in opts and not _when_holds(str(opts["when"]), env):
                continue
            phase = opts.get("phase", "install.d")
            key = "uninstall" if opts.get("uninstall") else "install"
            actions.setdefault(phase, {"install": [], "uninstall": []})[key].append(package)
            if opts.get("build-only"):
                actions.setdefault("cleanup", {"install": [], "uninstall": []})[
                    "uninstall"].append(package)
    return actions


def element_env(own, plan_env: dict) -> dict:
    """The variables the elements' environment.d files set, evaluated on the
    host with the plan's variables (as DIB sources them)."""
    files = []
    for element in own:
        folder = element.path / "environment.d"
        if folder.is_dir():
            files += sorted(folder.iterdir(), key=lambda p: p.name)
    files.sort(key=lambda p: p.name)
    script = "set -eu\n" + "".join(f"source {shlex.quote(str(f))}\n" for f in files) + \
        "env -0\n"
    proc = subprocess.run(["bash", "-c", script], env={**_clean_env(), **plan_env},
                          capture_output=True)
    if proc.returncode != 0:
        raise BuildError("environment.d failed: " + proc.stderr.decode(errors="replace")[-500:])
    out = {}
    for item in proc.stdout.split(b"\0"):
        key, sep, value = item.decode(errors="replace").partition("=")
        if sep:
            out[key] = value
    return {k: v for k, v in out.items()
            if k.startswith(("TROVE_", "DIB_")) or k in plan_env}


def _clean_env() -> dict:
    keep = ("PATH", "HOME", "LANG", "TMPDIR")
    return {k: v for k, v in os.environ.items() if k in keep}


def base_plan(plan: BuildPlan, dib_elements) -> tuple[BuildPlan, str]:
    """The OS base as a DIB plan, and the cache key of what makes it."""
    names = [plan.elements[0], "vm", "block-device-mbr"] + \
        [e.name for e in dib_elements if e.name not in BASE_ONLY and e.name != plan.elements[0]]
    env = {k: v for k, v in plan.env.items() if k.startswith("DIB_")}
    prof = plan.profile
    from importlib.metadata import version
    key = hashlib.sha256(json.dumps({
        "elements": names, "env": env, "size": prof.image.size, "arch": plan.arch,
        "dib": version("diskimage-builder")}, sort_keys=True).encode()).hexdigest()[:16]
    # the cached base is always a qcow2 (the overlay's backing file)
    prof = dataclasses.replace(prof, image=dataclasses.replace(prof.image, format="qcow2"))
    base = BuildPlan(profile=prof, elements=tuple(names), env=env, packages=(),
                     elements_path=plan.elements_path, output=plan.output, arch=plan.arch)
    return base, key


def _root_owned(info: tarfile.TarInfo) -> tarfile.TarInfo:
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    return info


def _guest_script(phase: str, scripts, installs, uninstalls) -> str:
    """The shell script that runs one phase inside the guest."""
    lines = ["set -eu", "set -o pipefail",
             f"export PATH={IN_TARGET}/bin:/usr/local/sbin:/usr/local/bin:"
             "/usr/sbin:/usr/bin:/sbin:/bin",
             "export DEBIAN_FRONTEND=noninteractive",
             f"set -a; . {IN_TARGET}/environment; set +a"]
    if installs:
        lines.append("install-packages " + " ".join(shlex.quote(p) for p in installs))
    for name, _path in scripts:
        lines.append(f"echo '>> {phase}/{name}'")
        lines.append(f"{IN_TARGET}/{phase}/{shlex.quote(name)}")
    if uninstalls:
        lines.append("apt-get -y -q purge " + " ".join(shlex.quote(p) for p in uninstalls))
        lines.append("apt-get -y -q autoremove --purge")
    return "\n".join(lines) + "\n"


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


class VirtCustomizeBackend:
    name = "virt-customize"
    tools = (
        ("qemu-img", "qemu-utils", "build"),
        ("virt-customize", "libguestfs-tools", "build"),
        ("supermin", "supermin", "build"),
    )

    def __init__(self, guestfs_factory=None):
        self._factory = guestfs_factory

    def extra_checks(self) -> list:
        """The Python bindings and what the appliance is made from."""
        try:
            import guestfs  # noqa: F401
            bindings = host.Check("libguestfs bindings", True, f"import guestfs works in "
                                  f"{os.sys.executable}")
        except ImportError:
            bindings = host.Check(
                "libguestfs bindings", False, f"{os.sys.executable} cannot import guestfs",
                "install 'python3-guestfs' and use the .venv scripts/install makes")
        kernels = sorted(Path("/boot").glob("vmlinuz-*"), key=lambda p: [
            int(t) if t.isdigit() else t for t in re.split(r"(\d+)", p.name)])
        kernel = host.Check("appliance kernel", bool(kernels),
                            str(kernels[-1]) if kernels else "no /boot/vmlinuz-*",
                            "" if kernels else "install 'linux-image-amd64' (supermin "
                            "builds the appliance from the host's kernel)")
        accel = host.Check("libguestfs accelerator", True,
                           "kvm" if host.accelerator() == "kvm" else
                           "tcg (LIBGUESTFS_BACKEND_SETTINGS=force_tcg, set by the build)")
        return [bindings, kernel, accel]

    # -- the parts, each testable on its own ------------------------------

    def prepare(self, plan: BuildPlan, known=None):
        known = known if known is not None else elements_mod.discover(
            [p for p in plan.elements_path[1:]])
        own, dib = resolve(plan.elements, known)
        refuse_unrunnable(own)
        env = element_env(own, plan.env)
        return own, dib, env

    def command(self, plan: BuildPlan, workdir: Path, cache_dir: Path):
        """What --dry-run shows: the element phases this backend will run."""
        own, dib, env = self.prepare(plan)
        base, key = base_plan(plan, dib)
        argv = ["# base image (DIB, cached):", str(cache_dir / "base" / f"{key}.qcow2"),
                "# elements:"] + [e.name for e in own]
        for phase in GUEST_PHASES:
            argv += [f"# {phase}:"] + [name for name, _ in phase_scripts(own, phase)]
        return argv, env

    def guestfs(self):
        if self._factory is not None:
            return self._factory()
        try:
            import guestfs
        except ImportError as exc:
            raise HostError("the libguestfs Python bindings are missing: this Python "
                            f"({os.sys.executable}) cannot import guestfs; install "
                            "'python3-guestfs' and use the .venv scripts/install makes "
                            "(it sees Debian's system packages)") from exc
        return guestfs.GuestFS(python_return_dict=True)

    def apply(self, g, own, env: dict, hooks: Path, logf, packages=()) -> None:
        """Everything inside one appliance launch (the disk already added);
        packages: the profile's extra OS packages."""
        actions = package_actions(own, env)
        if packages:
            actions.setdefault("install.d", {"install": [], "uninstall": []})[
                "install"].extend(packages)
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
            g.write(f"{IN_TARGET}/run-{phase}", _guest_script(
                phase, scripts, act["install"], act["uninstall"]))
            self._sh(g, f"bash {IN_TARGET}/run-{phase}", phase, logf)
            logf.write(f"# {phase}: {time.monotonic() - start:.1f} s\n")
        cleanup = actions.get("cleanup")
        if cleanup and cleanup["uninstall"]:
            names = " ".join(shlex.quote(p) for p in cleanup["uninstall"])
            self._sh(g, f"DEBIAN_FRONTEND=noninteractive apt-get -y -q purge {names} && "
                     "DEBIAN_FRONTEND=noninteractive apt-get -y -q autoremove --purge",
                     "cleanup", logf)

        # generalise, and give the image back its own resolv.conf
        self._sh(g, GENERALISE, "generalise", logf)
        g.rm_f("/tmp/tib-step.log")
        g.rm_f("/etc/resolv.conf")
        if g.exists("/etc/resolv.conf.tib-saved") or g.is_symlink("/etc/resolv.conf.tib-saved"):
            g.rename("/etc/resolv.conf.tib-saved", "/etc/resolv.conf")

    @staticmethod
    def _sh(g, script: str, what: str, logf) -> None:
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

    def _hooks(self, own, env: dict, workdir: Path, logf) -> Path:
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

    def base_image(self, plan: BuildPlan, dib, cache_dir: Path, timings: dict) -> Path:
        base, key = base_plan(plan, dib)
        path = cache_dir / "base" / f"{key}.qcow2"
        if path.is_file():
            log.info(f"base image from the cache: {path}")
            return path
        from .dib import DibBackend
        path.parent.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=".base-", dir=path.parent))
        try:
            with log.step(f"build the base image once with DIB ({' '.join(base.elements)})",
                          timings, "base-image"):
                image = DibBackend().build(base, work, cache_dir, path.with_suffix(".log"),
                                           timings)
                os.replace(image, path)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        return path

    def build(self, plan: BuildPlan, workdir: Path, cache_dir: Path,
              log_path: Path, timings: dict) -> Path:
        own, dib, env = self.prepare(plan)
        base = self.base_image(plan, dib, cache_dir, timings)
        overlay = workdir / "overlay.qcow2"
        run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", str(base),
             str(overlay)])
        with open(log_path, "w", encoding="utf-8") as logf:
            hooks = self._hooks(own, env, workdir, logf)
            # libguestfs reads its settings when the handle is made
            for key, value in host.libguestfs_env().items():
                os.environ.setdefault(key, value)
            g = self.guestfs()
            try:
                g.set_network(True)
                g.set_memsize(2048)
                g.set_smp(2)
                g.add_drive_opts(str(overlay), format="qcow2", readonly=False,
                                 discard="besteffort")
                start = time.monotonic()
                g.launch()
                timings["appliance-launch"] = round(time.monotonic() - start, 1)
                log.info(f"libguestfs appliance up in {timings['appliance-launch']} s "
                         f"({host.accelerator()})")
                self.apply(g, own, env, hooks, logf, plan.packages)
                try:
                    g.fstrim("/")       # freed blocks stay out of the output
                except RuntimeError:
                    pass
                g.sync()
                g.umount_all()
                g.shutdown()
            except RuntimeError as exc:
                raise BuildError(f"libguestfs: {str(exc).strip()[-400:]}; log: {log_path}") \
                    from exc
            finally:
                g.close()
        image = workdir / f"image.{plan.profile.image.format}"
        argv = ["qemu-img", "convert", "-O", plan.profile.image.format, str(overlay), str(image)]
        if plan.profile.image.format == "qcow2" and plan.profile.image.compression != "none":
            argv[2:2] = ["-c"]
            if plan.profile.image.compression == "zstd":
                argv[-2:-2] = ["-o", "compression_type=zstd"]
        with log.step("flatten and compress", timings, "convert"):
            run(argv)
        overlay.unlink()
        return image
