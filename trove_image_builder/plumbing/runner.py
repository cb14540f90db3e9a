"""The one place that runs external commands.

Every command is run with an explicit argv and environment; when one fails
the error carries a shell line the user can paste to run it again.
"""
import hashlib
import os
import shlex
import subprocess

from ..errors import BuildError


def stop(proc: subprocess.Popen, timeout: float = 30) -> None:
    """Terminate a child we started; kill it if it does not go in time."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def sha256_of(path) -> str:
    """The SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def replay_line(argv, env_changes=None) -> str:
    """A shell line that re-runs argv with the given extra environment."""
    prefix = " ".join(f"{k}={shlex.quote(str(v))}"
                      for k, v in sorted((env_changes or {}).items()))
    return (prefix + " " if prefix else "") + shlex.join(str(a) for a in argv)


def run(argv, *, env_changes=None, check=True, capture=True, timeout=None,
        input_text=None, cwd=None) -> subprocess.CompletedProcess:
    """Run argv; env is os.environ plus env_changes.

    Raises BuildError with the replay line when check is set and it fails.
    """
    env = dict(os.environ)
    env.update({k: str(v) for k, v in (env_changes or {}).items()})
    try:
        proc = subprocess.run(
            [str(a) for a in argv], env=env, cwd=cwd, text=True,
            input=input_text, timeout=timeout,
            stdout=subprocess.PIPE if capture else None,
            stderr=subprocess.PIPE if capture else None)
    except FileNotFoundError as exc:
        raise BuildError(f"{argv[0]}: command not found ({exc.strerror}); "
                         "run 'trove-image-builder check'") from exc
    except subprocess.TimeoutExpired as exc:
        raise BuildError(f"timed out after {timeout} s: "
                         f"{replay_line(argv, env_changes)}") from exc
    if check and proc.returncode != 0:
        detail = (proc.stderr or "").strip().splitlines()[-1:] if capture else []
        raise BuildError(
            f"command failed with exit code {proc.returncode}: "
            f"{replay_line(argv, env_changes)}"
            + (f" ({detail[0]})" if detail else ""))
    return proc
