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


HOLD = """
import sys, time
from trove_image_builder.vm.dev.state import locked
with locked(sys.argv[1], sys.argv[2], create=True):
    print("held", flush=True)
    time.sleep(120)
"""


@contextlib.contextmanager
def holding(folder, command):
    """Another process holding folder's lock as 'dev COMMAND' does."""
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(folder), command],
                            stdout=subprocess.PIPE, text=True,
                            cwd=Path(__file__).resolve().parents[2])
    try:
        assert proc.stdout.readline() == "held\n"
        yield proc
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()


class FakeQMP:
    """qemu's monitor on a unix socket, in a thread: records each command
    and answers from `answers` (command -> a list of returns, the last one
    repeated); `errors` (command -> desc) makes a command fail."""

    def __init__(self, path, answers=None, errors=None, on=None):
        import json
        import socket
        import threading
        self.path = Path(path)
        self.answers = {k: list(v) for k, v in (answers or {}).items()}
        self.errors = dict(errors or {})
        self.on = dict(on or {})            # command -> callable(arguments)
        self.commands = []
        self.server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.server.bind(str(self.path))
        self.server.listen(4)
        self._json = json
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            with conn, conn.makefile("rw") as fh:
                fh.write('{"QMP": {"version": {}, "capabilities": []}}\n')
                fh.flush()
                for line in fh:
                    request = self._json.loads(line)
                    name, arguments = request["execute"], request.get("arguments", {})
                    self.commands.append((name, arguments))
                    if name in self.on:
                        self.on[name](arguments)
                    fh.write('{"event": "STOP"}\n')       # events come in between
                    if name in self.errors:
                        answer = {"error": {"class": "GenericError",
                                            "desc": self.errors[name]}}
                    else:
                        returns = self.answers.get(name) or [{}]
                        answer = {"return": returns.pop(0) if len(returns) > 1
                                  else returns[0]}
                    fh.write(self._json.dumps(answer) + "\n")
                    fh.flush()

    def names(self) -> list:
        return [name for name, _ in self.commands]

    def close(self):
        self.server.close()
