"""The virt-customize backend: the same elements, applied with libguestfs to
a base disk image instead of built by diskimage-builder.

The base image (the OS and DIB's own elements) is built once by the DIB
backend and cached, keyed by a hash of what made it. A build then:

1. makes a qcow2 overlay on the cached base (the base is never written);
2. resolves the plan's own elements (``elements/`` and --elements-path) with
   DIB's element-deps expansion, refuses any phase it cannot run in a guest,
   and lets DIB's package-installs decide the packages of each phase
   (``virt_customize_plan``);
3. runs the ``extra-data.d`` scripts on the host, as DIB does, into a hooks
   folder, and copies that folder into the guest as ``/tmp/in_target.d``;
4. in one libguestfs appliance launch: copies ``static/`` files, runs
   ``pre-install.d``, ``install.d``, ``post-install.d`` and ``finalise.d``
   in DIB's order (all elements' scripts of a phase sorted by name, the
   package installs and removals where DIB's package-installs element runs
   them), then generalises the image (machine-id, ssh host keys, cloud-init
   state, package caches) (``virt_customize_guest``);
5. flattens and compresses the overlay into the output image.
"""
import os
from pathlib import Path
import re
import shlex
import shutil
import tempfile
import time

from ...plumbing import host, imagefs, log
from ...errors import BuildError, HostError
from ..plan import BuildPlan
from ...plumbing.runner import run
from . import virt_customize_guest as guest
from .base import Backend
from .virt_customize_plan import (GUEST_PHASES, HOST_PHASES, base_plan, package_steps,
                                  phase_scripts, prepare)


class VirtCustomizeBackend(Backend):
    name = "virt-customize"
    tools = (
        ("qemu-img", "qemu-utils", "build"),
        ("virt-customize", "libguestfs-tools", "build"),
        ("supermin", "supermin", "build"),
    )

    def __init__(self, guestfs_factory=None):
        self._factory = guestfs_factory

    def host_checks(self) -> list:
        return super().host_checks() + self.libguestfs_checks()

    @staticmethod
    def libguestfs_checks() -> list:
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

    def describe(self, plan: BuildPlan, workdir: Path, cache_dir: Path) -> list[str]:
        """The base image, the elements, the environment, and per phase its
        scripts and packages."""
        work = prepare(plan)
        base, key = base_plan(plan, work.dib)
        lines = [f"base image (built once with DIB, cached): {base_path(cache_dir, key)}",
                 f"base image elements: {' '.join(base.elements)}",
                 f"elements: {' '.join(e.name for e in work.own)}"]
        lines += [f"environment: {k}={shlex.quote(v)}" for k, v in sorted(work.env.items())]
        for phase in HOST_PHASES + GUEST_PHASES:
            where = "on the host" if phase in HOST_PHASES else "in the guest"
            scripts = [name for name, _ in phase_scripts(work.own, phase)]
            lines.append(f"{phase} ({where}): {' '.join(scripts) or '-'}")
            act = work.actions.get(phase, {})
            for kind, verb, step in zip(("install", "uninstall"), ("installs", "removes"),
                                        package_steps().get(phase, ())):
                if act.get(kind):
                    lines.append(f"{phase} {verb} (at {step}): {' '.join(act[kind])}")
        image = plan.profile.image
        lines.append(f"then: generalise, flatten into {image.format}"
                     + (f" (compression {image.compression})" if image.format == "qcow2"
                        else ""))
        return lines

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

    def base_image(self, plan: BuildPlan, dib, cache_dir: Path, timings: dict) -> Path:
        base, key = base_plan(plan, dib)
        path = base_path(cache_dir, key)
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
        work = prepare(plan)
        base = self.base_image(plan, work.dib, cache_dir, timings)
        overlay = workdir / "overlay.qcow2"
        run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", str(base),
             str(overlay)])
        with open(log_path, "w", encoding="utf-8") as logf:
            hooks = guest.make_hooks(work.own, work.env, workdir, logf)
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
                guest.apply(g, work.own, work.actions, hooks, logf)
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
        argv = imagefs.convert_argv(overlay, image, plan.profile.image.format,
                                    plan.profile.image.compression)
        with log.step("flatten and compress", timings, "convert"):
            run(argv)
        overlay.unlink()
        return image


def base_path(cache_dir: Path, key: str) -> Path:
    return cache_dir / "base" / f"{key}.qcow2"
