"""What the developer-loop tests share: a state folder as 'dev up' writes
it, stand-in processes that carry a marker in their command line (as qemu
carries its overlay's path), and a guest that records what is run over ssh."""
import contextlib
import io
from pathlib import Path
import subprocess
import sys
import tarfile
import time

from trove_image_builder.vm.dev.state import DevState


def make_state(folder, **overrides) -> DevState:
    values = dict(folder=folder, image="/images/dev-mariadb.qcow2", user="trove",
                  guest_id="0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0",
                  rpc_key="bzH6y0SGmjuoY0FNSTptrhgieGXNDX6P", tenant_id="trove-image-builder",
                  manager="mariadb", datastore_version="11.8", agent_unit="guest-agent.service",
                  agent_venv="/opt/guest-agent-venv", agent_state="/opt/trove-guestagent",
                  agent_log="/var/log/trove/trove-guestagent.log", accel="tcg",
                  memory_mb=2048, ssh_port=40022, forwarded={3306: 40306},
                  broker={"pid": None, "port": 45672, "dist_port": 45673,
                          "node": "tibx@localhost", "home": str(folder / "broker"),
                          "epmd_was_running": True},
                  trove_src=None, preparable=True)
    values.update(overrides)
    return DevState(**values)


def sleeper_argv(*marker) -> list:
    """A process that sleeps, with marker in its command line."""
    return [sys.executable, "-c", "import time; time.sleep(120)", *map(str, marker)]


def wait_for_exec(pid, marker, timeout=10):
    """Until pid's command line names marker: a child forked but not yet
    executing its program still shows ours."""
    deadline = time.monotonic() + timeout
    while str(marker).encode() not in Path(f"/proc/{pid}/cmdline").read_bytes():
        assert time.monotonic() < deadline, f"pid {pid} never ran with {marker}"
        time.sleep(0.01)


@contextlib.contextmanager
def sleeper(*marker):
    proc = subprocess.Popen(sleeper_argv(*marker), start_new_session=True)
    try:
        if marker:
            wait_for_exec(proc.pid, marker[0])
        yield proc
    finally:
        proc.kill()
        proc.wait()


class Done:
    def __init__(self, returncode=0, stdout="", stderr=""):
        self.returncode, self.stdout, self.stderr = returncode, stdout, stderr


class FakeGuest:
    """ssh(): records each script and answers from `answers` (a list of
    (substring, Done)); ssh_argv(): a local command that lists the tar
    archive it is fed into `received`, for send_files."""

    def __init__(self, tmp_path, answers=()):
        self.scripts = []
        self.answers = list(answers)
        self.tmp_path = tmp_path
        self.received = []          # (script, [names in the archive])

    def ssh(self, script, timeout=300):
        self.scripts.append(script)
        for part, done in self.answers:
            if part in script:
                return done
        return Done()

    def ssh_argv(self, *command):
        script = " ".join(command)
        self.scripts.append(script)
        out = self.tmp_path / f"archive-{len(self.received)}.tgz"
        self.received.append((script, out))
        return ["sh", "-c", f"cat > {out}"]

    def archive_names(self, n=-1) -> list:
        with tarfile.open(fileobj=io.BytesIO(self.received[n][1].read_bytes())) as tar:
            return sorted(tar.getnames())

    def console_tail(self, lines=25):
        return ""
