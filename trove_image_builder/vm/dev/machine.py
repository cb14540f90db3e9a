"""Up, down and status of the development VM.

``up`` starts three detached processes, each in a session of its own so
they outlive the command: a RabbitMQ on 127.0.0.1 (vm.rabbit.LocalRabbit,
its home in the state folder), qemu (vm.boot, the guest reaching the broker
through the guest forward that ``boot`` sets up) and the background
conductor (dev.conductor). Their pids and ports go into state.json as each
starts, so that ``down`` stops whatever ``up`` got to, even a failed one.
A second ``up`` reuses what runs, restarting the broker (on its port) or
the conductor if they died. ``down`` stops the three and removes the folder.
"""
import contextlib
import os
from pathlib import Path
import shutil
import signal
import subprocess
import sys
import time
import warnings

from ...contract import expectations as expect_mod
from ...errors import InputError, TroveImageBuilderError, VerifyError
from ...plumbing import host, log
from ...plumbing.cleanup import release_workdir
from ...plumbing.runner import stop
from .. import boot
from . import state as state_mod
from .state import DevState

AGENT_DEADLINE = 600        # boot to the agent's first answer, under TCG
STOP_TIMEOUT = 30


def _agent_log(files: dict, paths) -> str:
    """The agent's log file, as its injected configuration names it."""
    import configparser
    conf = configparser.ConfigParser(interpolation=None)
    conf.read_string(files[paths.agent_conf])
    return "{log_dir}/{log_file}".format(**conf["DEFAULT"])


def trove_source_of(image: Path) -> str | None:
    """The Trove checkout the image's agent was built from (its manifest)."""
    try:
        manifest = expect_mod.read_manifest(Path(image)) or {}
        agent = manifest["profile"]["resolved"]["guest_agent"]
    except (KeyError, TypeError, InputError):
        return None
    return agent.get("path") if agent.get("install") == "source" else None


def preparable(expect) -> bool:
    """Trove's prepare can be played against this image (an agent, a
    datastore in a container, a manager Trove drives and the host queries)."""
    if expect.agent_install == "none" or expect.datastore_runtime != "container":
        return False
    from ..controller import check_preparable
    try:
        check_preparable(expect.datastore_manager)
    except InputError:
        return False
    return True


# --------------------------------------------------------------------------
# The processes

def stop_pid(pid: int | None, marker: str, group: bool = False,
             timeout: float = STOP_TIMEOUT) -> bool:
    """SIGTERM our process pid (or its process group), SIGKILL after
    timeout; True if one was running."""
    if not state_mod.alive(pid, marker):
        return False
    kill = os.killpg if group else os.kill
    kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while state_mod.alive(pid):
        if time.monotonic() > deadline:
            kill(pid, signal.SIGKILL)
            deadline = time.monotonic() + 10
        time.sleep(0.2)
    return True


def conductor_argv(folder: Path) -> list:
    return [sys.executable, "-m", "trove_image_builder.vm.dev.conductor", str(folder)]


def start_conductor(st: DevState) -> None:
    """Start the background conductor for st (detached); record its pid."""
    with open(st.folder / "conductor.log", "a") as out:
        proc = subprocess.Popen(conductor_argv(st.folder), stdin=subprocess.DEVNULL,
                                stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    st.conductor_pid = proc.pid
    st.save()


def conductor_running(st: DevState) -> bool:
    return state_mod.alive(st.conductor_pid, str(st.folder))


def stop_conductor(st: DevState) -> bool:
    stopped = stop_pid(st.conductor_pid, str(st.folder))
    st.conductor_pid = None
    st.save()
    return stopped


def _broker(st: DevState):
    from ..rabbit import LocalRabbit
    return LocalRabbit.restore(st.broker) if st.broker else None


def _start_broker(folder: Path, port: int | None = None):
    from ..rabbit import LocalRabbit
    with log.step(f"start RabbitMQ on 127.0.0.1{f':{port}' if port else ''}"):
        return LocalRabbit(home=folder / "broker", port=port).start()


# --------------------------------------------------------------------------
# up

def existing(folder: Path) -> DevState | None:
    """The state of a VM up in folder, None if there is none."""
    return state_mod.load(folder) if (Path(folder) / state_mod.STATE_FILE).is_file() else None


def up(folder: Path, image: Path | None = None, expect=None,
       trove_src: str | None = None) -> tuple[DevState, dict]:
    """Boot image (Expectations expect) with its broker and conductor, or
    reuse what runs in folder; wait for the agent's answer to rpc_ping.
    Returns the state and timings."""
    folder = Path(folder).resolve()
    found = existing(folder)
    if found is not None:
        return _reuse(state_mod.require_running(found), trove_src)
    if image is None or expect is None:
        raise InputError("dev up: no image to boot")
    boot.check_tools(guest_forwards=((5672, 0),))
    folder.mkdir(parents=True, exist_ok=True)
    try:
        st, timings = _boot(folder, Path(image).resolve(), expect, trove_src)
    except BaseException:
        down(folder)
        raise
    if expect.agent_install != "none":
        try:
            timings["agent"] = wait_for_agent(st, "the agent's first answer to rpc_ping")
        except VerifyError as exc:
            raise VerifyError(f"{exc.message}\nthe VM stays up to look into it ('dev logs', "
                              "'dev ssh'); 'dev down' stops it") from exc
    return st, timings


def _boot(folder: Path, image: Path, expect, trove_src) -> tuple[DevState, dict]:
    timings = {}
    accel = host.accelerator()
    ready = preparable(expect)
    overrides, ports = {}, ()
    if ready:
        from ..controller import agent_options, datastore_port
        overrides["agent_options"] = agent_options(accel)
        ports = (datastore_port(expect.datastore_manager),)
    injection, files = boot.trove_files(expect, **overrides)
    paths = expect.paths
    st = DevState(folder=folder, image=str(image), user=expect.guest_user,
                  guest_id=injection.guest_id, rpc_key=injection.rpc_key,
                  tenant_id=injection.tenant_id, manager=expect.datastore_manager,
                  datastore_version=expect.datastore_version, agent_unit=paths.agent_unit,
                  agent_venv=paths.agent_venv, agent_state=paths.agent_state,
                  agent_log=_agent_log(files, paths), accel=accel,
                  memory_mb=boot.GUEST_MEMORY_MB,
                  trove_src=str(trove_src) if trove_src else trove_source_of(image),
                  preparable=ready)
    st.save()
    broker = _start_broker(folder)
    st.broker = broker.record()
    st.save()
    with log.step(f"boot {image.name} (overlay in {folder})", timings, "boot"):
        guest, argv = boot.prepare_machine(folder, image, st.user, files,
                                           ((5672, broker.port),), host_forwards=ports,
                                           memory_mb=st.memory_mb, accel=accel)
        proc = boot.start_qemu(guest, argv, detached=True)
        st.qemu_pid, st.ssh_port, st.forwarded = proc.pid, guest.ssh_port, guest.forwarded
        st.save()
        try:
            boot.wait_until_up(guest)
        except BaseException:
            stop(proc)      # ours, even before it shows its argv to down()
            raise
        st.boot_seconds = guest.boot_seconds
        st.save()
    start_conductor(st)
    return st, timings


def _reuse(st: DevState, trove_src) -> tuple[DevState, dict]:
    """What runs is kept; a dead broker (on its port: the VM's forward
    points there) or conductor is started again."""
    log.info(f"the development VM is up already (qemu pid {st.qemu_pid}): reusing it")
    broker = _broker(st)
    if broker is not None and not broker.running():
        st.broker = _start_broker(st.folder, broker.port).record()
        st.save()
    if not conductor_running(st):
        start_conductor(st)
    if trove_src and trove_src != st.trove_src:
        st.trove_src = str(trove_src)
        st.save()
    return st, {}


@contextlib.contextmanager
def _quiet_messaging():
    """oslo.messaging's rabbit driver imports eventlet when first used,
    which warns that it is deprecated (an EventletDeprecationWarning, a
    plain Warning; nothing here runs on eventlet)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def wait_for_agent(st: DevState, title: str, deadline: float = AGENT_DEADLINE) -> float:
    """Seconds until the agent answers rpc_ping (VerifyError with the
    journal's tail if it does not, or the VM's console if it died)."""
    from ..rabbit import wait_for_rpc
    with log.step(title):
        try:
            with _quiet_messaging():
                _answer, waited = wait_for_rpc(st.broker_url, st.guest_id, deadline,
                                               rpc_key=st.rpc_key)
        except VerifyError as exc:
            state_mod.require_running(st)
            journal = st.guest().ssh(f"sudo journalctl -u {st.agent_unit} --no-pager -n 15")
            raise VerifyError(f"{exc.message}; the agent's journal:\n"
                              f"{journal.stdout.strip()}") from exc
        log.info(f"the agent answered after {waited} s")
    return waited


# --------------------------------------------------------------------------
# down, status

def down(folder: Path) -> list[str]:
    """Stop the conductor, qemu and the broker that folder names; remove the
    folder. Says what was stopped."""
    folder = Path(folder).resolve()
    done = []
    if not folder.exists():
        return done
    try:
        st = existing(folder)
    except TroveImageBuilderError:
        st = None
    if st is not None:
        if stop_pid(st.conductor_pid, str(folder)):
            done.append(f"conductor (pid {st.conductor_pid})")
        if stop_pid(st.qemu_pid, str(folder / "overlay.qcow2")):
            done.append(f"qemu (pid {st.qemu_pid})")
        broker = _broker(st)
        if broker is not None:
            was = state_mod.alive(broker.pid, str(folder))
            broker.stop()
            if was:
                done.append(f"RabbitMQ (pid {broker.pid})")
    done += release_workdir(folder)
    shutil.rmtree(folder, ignore_errors=True)
    return done


def status(folder: Path, ping_timeout: float = 10) -> dict:
    """The VM, its ports, the broker, the conductor, the agent's last
    heartbeat and whether it answers rpc_ping now."""
    st = state_mod.load(folder)
    vm = state_mod.qemu_running(st)
    broker = _broker(st)
    found = {
        "image": st.image, "vm": {
            "running": vm, "pid": st.qemu_pid, "accel": st.accel,
            "up_seconds": round(time.time() - st.started_at), "boot_seconds": st.boot_seconds,
            "ssh": f"127.0.0.1:{st.ssh_port}",
            "forwards": {str(g): f"127.0.0.1:{h}" for g, h in st.forwarded.items()}},
        "broker": {"running": bool(broker and broker.running()),
                   "url": st.broker_url if broker else None},
        "conductor": {"running": conductor_running(st), "pid": st.conductor_pid},
        "guest_id": st.guest_id, "trove_src": st.trove_src,
        "last_heartbeat": state_mod.last_heartbeat(folder),
    }
    if vm and found["broker"]["running"]:
        from ..rabbit import rpc_call
        start = time.monotonic()
        try:
            with _quiet_messaging():
                rpc_call(st.broker_url, st.guest_id, timeout=ping_timeout, rpc_key=st.rpc_key)
            found["agent"] = {"answers": True,
                              "seconds": round(time.monotonic() - start, 1)}
        except Exception as exc:  # noqa: BLE001 - a status line, not a failure
            found["agent"] = {"answers": False, "error": f"{type(exc).__name__}: {exc}"}
    else:
        found["agent"] = {"answers": False, "error": "the VM or the broker is not running"}
    if not vm:
        found["vm"]["console_tail"] = st.guest().console_tail(10)
    return found
