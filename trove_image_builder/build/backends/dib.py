"""The diskimage-builder backend: runs ``disk-image-create`` on a plan."""
import contextlib
import fcntl
import os
from pathlib import Path
import re
import shlex
import signal
import subprocess
import time

from ...plumbing import host, log
from ...plumbing.cleanup import forget_dev_mapper, release_workdir
from ...errors import BuildError
from ..plan import BuildPlan
from ...plumbing.runner import replay_line
from .base import Backend

PHASE_RE = re.compile(
    r"(?:Running hooks from \S*?/|dib-run-parts.*?/|Running in phase )"
    r"(root|extra-data|pre-install|install|post-install|block-device|"
    r"pre-finalise|finalise|cleanup)\.d\b")
STOP_GRACE_SECONDS = 120


class DibBackend(Backend):
    name = "dib"
    tools = (
        ("disk-image-create", "diskimage-builder (pip)", "build"),
        ("qemu-img", "qemu-utils", "build"),
        ("partx", "util-linux", "build"),
        ("losetup", "util-linux", "build"),
        ("sfdisk", "fdisk", "build"),
        ("mkfs.ext4", "e2fsprogs", "build"),
        ("debootstrap", "debootstrap", "build"),
        ("ssh-keygen", "openssh-client", "build"),
    )

    def command(self, plan: BuildPlan, workdir: Path, cache_dir: Path):
        """argv and the environment changes for disk-image-create."""
        prof = plan.profile
        argv = ["disk-image-create", "-a", plan.arch,
                "-t", prof.image.format,
                "-o", str(workdir / "image"),
                "--image-size", plan.size_gib]
        if prof.image.format == "qcow2":
            if prof.image.compression == "none":
                argv.append("-u")
            elif prof.image.compression == "zstd":
                argv += ["--qemu-img-options", "compression_type=zstd"]
        if plan.packages:
            argv += ["-p", ",".join(plan.packages)]
        argv += list(plan.elements)
        path = host.tool_path()
        if host.shim_dir_needed():
            path = f"{host.SHIMS_DIR}:{path}"
        env = {
            "ELEMENTS_PATH": ":".join(plan.elements_path),
            "PATH": path,
            "TMP_DIR": str(workdir / "tmp"),
            "DIB_IMAGE_CACHE": str(cache_dir / "dib"),
        }
        env.update(plan.env)
        return argv, env

    def describe(self, plan: BuildPlan, workdir: Path, cache_dir: Path) -> list[str]:
        """The environment disk-image-create gets, then its command line:
        both ready to paste into a shell."""
        argv, env = self.command(plan, workdir, cache_dir)
        return [f"export {key}={shlex.quote(env[key])}" for key in sorted(env)] + \
            [shlex.join(argv)]

    def build(self, plan: BuildPlan, workdir: Path, cache_dir: Path,
              log_path: Path, timings: dict) -> Path:
        argv, env = self.command(plan, workdir, cache_dir)
        (workdir / "tmp").mkdir(parents=True, exist_ok=True)
        (cache_dir / "dib").mkdir(parents=True, exist_ok=True)
        with _cache_lock(cache_dir / "dib"):
            return self._build(plan, workdir, argv, env, log_path, timings)

    def _build(self, plan, workdir, argv, env, log_path, timings) -> Path:
        # The host's pip configuration (PIP_*) is not the image's.
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
        full_env.update(env)
        # DIB prints its own timestamps; keep the log complete.
        full_env.setdefault("DIB_QUIET", "0")
        mapper_existed = Path("/dev/mapper").exists()
        with open(log_path, "w", encoding="utf-8") as logf:
            logf.write("# " + replay_line(argv, env) + "\n")
            logf.flush()
            proc = subprocess.Popen(argv, env=full_env, stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT, text=True,
                                    errors="replace", start_new_session=True)
            try:
                self._follow(proc, logf, timings)
            except BaseException:
                self._stop(proc)
                raise
            finally:
                release_workdir(workdir)
                if not mapper_existed:
                    forget_dev_mapper()
        if proc.returncode != 0:
            tail = _tail(log_path, 15)
            raise BuildError(
                f"disk-image-create failed with exit code {proc.returncode}; "
                f"full log: {log_path}\n{tail}")
        image = workdir / f"image.{plan.profile.image.format}"
        if not image.is_file():
            raise BuildError(f"disk-image-create made no {image.name}; log: {log_path}")
        return image

    @staticmethod
    def _follow(proc, logf, timings):
        phase, started = "setup", time.monotonic()
        log.info("phase setup")
        for line in proc.stdout:
            logf.write(line)
            m = PHASE_RE.search(line)
            if m and m.group(1) != phase:
                now = time.monotonic()
                timings[f"dib.{phase}"] = round(
                    timings.get(f"dib.{phase}", 0) + now - started, 1)
                phase, started = m.group(1), now
                log.info(f"phase {phase}")
        proc.wait()
        timings[f"dib.{phase}"] = round(
            timings.get(f"dib.{phase}", 0) + time.monotonic() - started, 1)

    @staticmethod
    def _stop(proc):
        """Ask DIB to clean up (its traps unmount), then insist."""
        if proc.poll() is not None:
            return
        log.info("stopping disk-image-create (it unmounts what it mounted)")
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=STOP_GRACE_SECONDS)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        except ProcessLookupError:
            pass


@contextlib.contextmanager
def _cache_lock(cache: Path):
    """One DIB build at a time per cache: DIB's apt and bootstrap caches are
    shared, and apt inside two builds would fight over their locks."""
    with open(cache / ".lock", "w") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.info(f"waiting for another build that uses the cache {cache}")
            fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _tail(path: Path, lines: int) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    return "\n".join("  " + ln for ln in text[-lines:])
