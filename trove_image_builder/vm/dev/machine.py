"""Up, down and status of the development VM.

``up`` starts three detached processes, each in a session of its own so
they outlive the command: a RabbitMQ on 127.0.0.1 (vm.rabbit.LocalRabbit,
its home in the state folder), qemu (vm.boot, the guest reaching the broker
through the guest forward that ``boot`` sets up) and the background
conductor (dev.conductor). Their pids and ports go into state.json as each
starts, so that ``down`` stops whatever ``up`` got to, even a failed one.
A second ``up`` reuses what runs, restarting the broker (on its port) or
the conductor if they died. ``down`` stops the three and removes the folder.
With a snapshot kept in the folder (dev.snapshot), ``up`` resumes it instead
of booting.
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
from . import snapshot, state as state_mod
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


def resumable(folder: Path, image: Path | None = None) -> bool:
    """No VM runs in folder, and a snapshot kept there can run image (any
    image when None); says why not when there is one that cannot."""
    folder = Path(folder).resolve()
    record = snapshot.saved(folder)
    if record is None or existing(folder) is not None:
        return False
    why = snapshot.usable(record, image, host.accelerator())
    if why is not None:
        log.info(f"the snapshot in {folder / snapshot.FOLDER} is not resumed: {why}")
    return why is None


def up(folder: Path, image: Path | None = None, expect=None,
       trove_src: str | None = None, save: bool = False,
       resume: bool = True) -> tuple[DevState, dict]:
    """Boot image (Expectations expect) with its broker and conductor, or
    reuse what runs in folder, or resume the snapshot kept there (unless
    resume is false); wait for the agent's answer to rpc_ping. save: once
    the agent has answered after a boot, save the VM (dev.snapshot).
    Returns the state and timings."""
    folder = Path(folder).resolve()
    found = existing(folder)
    if found is not None:
        if save:
            log.info("--snapshot saves a VM right after its boot: this one is up already")
        return _reuse(state_mod.require_running(found), trove_src)
    if resume and resumable(folder, image):
        if save:
            log.info("--snapshot: the VM resumed is the one saved already")
        return _resume(folder, trove_src)
    if image is None or expect is None:
        raise InputError("dev up: no image to boot")
    boot.check_tools(guest_forwards=((5672, 0),))
    folder.mkdir(parents=True, exist_ok=True)
    try:
        st, timings = _boot(folder, Path(image).resolve(), expect, trove_src, save)
    except BaseException:
        down(folder, keep_snapshot=True)
        raise
    if expect.agent_install != "none":
        try:
            timings["agent"] = wait_for_agent(st, "the agent's first answer to rpc_ping")
        except VerifyError as exc:
            raise VerifyError(f"{exc.message}\nthe VM stays up to look into it ('dev logs', "
                              "'dev ssh'); 'dev down' stops it") from exc
    if save:
        timings["save"] = snapshot.save(st)["seconds"]
    return st, timings


def _resume(folder: Path, trove_src) -> tuple[DevState, dict]:
    """Start the saved VM from its snapshot, with a new broker, conductor
    and ports; wait for the agent. The broker starts while qemu loads."""
    from concurrent.futures import ThreadPoolExecutor
    from ..rabbit import LocalRabbit
    timings = {}
    boot.check_tools(guest_forwards=((5672, 0),))
    with log.step(f"copy the saved disks ({folder / snapshot.FOLDER})", timings, "restore"):
        st = snapshot.restore(folder)
    st.started_at = time.time()
    st.trove_src = str(trove_src) if trove_src else st.trove_src
    guest_ports = ()
    if st.preparable:
        from ..controller import datastore_port
        guest_ports = (datastore_port(st.manager),)
    broker_port, st.ssh_port, *ports = _free_ports(2 + len(guest_ports))
    st.forwarded = dict(zip(guest_ports, ports))
    broker = LocalRabbit(home=folder / "broker", port=broker_port)
    st.broker = broker.record()         # down() stops it, whatever happens next
    st.save()
    argv = boot.qemu_argv(folder / "overlay.qcow2", folder / "volume.raw",
                          folder / "config-drive.iso", st.ssh_port, folder / "console.log",
                          st.accel, ((5672, broker_port),), memory_mb=st.memory_mb,
                          host_forwards=tuple(st.forwarded.items()))
    argv += snapshot.incoming_argv(folder)
    (folder / "qemu.argv").write_text(" ".join(argv) + "\n")
    guest = st.guest()
    pool = ThreadPoolExecutor(max_workers=1)
    starting = pool.submit(broker.start)
    try:
        with log.step("resume the saved VM", timings, "resume"):
            proc = boot.start_qemu(guest, argv, detached=True)
            st.qemu_pid = proc.pid
            st.save()
            try:
                with log.step("load its state", timings, "load"):
                    snapshot.run_when_loaded(folder, proc)
                starting.result()
                st.broker = broker.record()
                st.save()
                log.info(f"RabbitMQ on 127.0.0.1:{broker_port}")
                _after_resume(st, proc)
            except BaseException:
                stop(proc)
                raise
            st.boot_seconds = round(time.monotonic() - guest.powered_on, 1)
            st.save()
        start_conductor(st)
    except BaseException:
        pool.shutdown(wait=True)        # a broker still starting is recorded: down stops it
        st.broker = broker.record()
        st.save()
        down(folder, keep_snapshot=True)
        raise
    pool.shutdown()
    timings["agent"] = wait_for_agent(st, "the agent's first answer to rpc_ping")
    return st, timings


def _after_resume(st: DevState, proc, timeout: float = boot.BOOT_TIMEOUT) -> None:
    """Run snapshot.after_resume_commands in the guest as soon as ssh lets
    us in (one connection: each costs seconds under TCG)."""
    guest = st.guest()
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise VerifyError(f"qemu exited with code {proc.returncode} after resuming; "
                              f"console:\n{guest.console_tail()}")
        try:
            done = guest.ssh(snapshot.after_resume_commands(st, time.time()), timeout=60)
        except subprocess.TimeoutExpired:
            last = "ssh timed out"
            continue
        if done.returncode != 255:      # 255: ssh itself failed
            return
        last = done.stderr.strip() or last
        time.sleep(1)
    raise VerifyError(f"no ssh login as {st.user} within {timeout:.0f} s of resuming "
                      f"({last})")


def _free_ports(count: int) -> list[int]:
    found = []
    while len(found) < count:
        port = host.free_port()
        if port not in found:
            found.append(port)
    return found


def _boot(folder: Path, image: Path, expect, trove_src,
          save: bool = False) -> tuple[DevState, dict]:
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
        if save:
            argv += snapshot.qmp_argv(folder)
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


def agent_consumers(st: DevState) -> int | None:
    """How many consumers the agent's server queue has on the broker (0 if
    the queue is not there yet); None if the broker cannot be asked."""
    try:
        import amqp         # oslo.messaging's rabbit driver stands on it
    except ImportError:
        return None
    queue = f"guestagent.{st.guest_id}.{st.guest_id}"
    conn = amqp.Connection(host=f"127.0.0.1:{st.broker['port']}", userid="guest",
                           password="guest", connect_timeout=5)
    try:
        conn.connect()
        return conn.channel().queue_declare(queue, passive=True).consumer_count
    except amqp.exceptions.NotFound:
        return 0
    except (OSError, amqp.exceptions.AMQPError):
        return None
    finally:
        with contextlib.suppress(OSError, amqp.exceptions.AMQPError):
            conn.close()


def _until_the_agent_listens(st: DevState, deadline: float) -> None:
    """Wait until the agent consumes its queue: an rpc_ping sent before is
    dropped (no queue on a new broker) or waits for the agent until it
    expires, and the next one goes only after the call's timeout (20 s)."""
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        count = agent_consumers(st)
        if count is None or count > 0:
            return
        if not state_mod.qemu_running(st):
            return          # wait_for_rpc says what happened
        time.sleep(0.5)


def wait_for_agent(st: DevState, title: str, deadline: float = AGENT_DEADLINE) -> float:
    """Seconds until the agent answers rpc_ping (VerifyError with the
    journal's tail if it does not, or the VM's console if it died)."""
    from ..rabbit import wait_for_rpc
    with log.step(title):
        start = time.monotonic()
        _until_the_agent_listens(st, deadline)
        try:
            with _quiet_messaging():
                _answer, waited = wait_for_rpc(
                    st.broker_url, st.guest_id, max(1.0, deadline - time.monotonic() + start),
                    rpc_key=st.rpc_key)
                waited = round(time.monotonic() - start, 1)
        except VerifyError as exc:
            state_mod.require_running(st)
            journal = st.guest().ssh(f"sudo journalctl -u {st.agent_unit} --no-pager -n 15")
            raise VerifyError(f"{exc.message}; the agent's journal:\n"
                              f"{journal.stdout.strip()}") from exc
        log.info(f"the agent answered after {waited} s")
    return waited


# --------------------------------------------------------------------------
# down, status

def down(folder: Path, keep_snapshot: bool = False) -> list[str]:
    """Stop the conductor, qemu and the broker that folder names; remove the
    folder (but for the snapshot in it, with keep_snapshot). Says what was
    stopped."""
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
    kept = folder / snapshot.FOLDER
    if keep_snapshot and snapshot.saved(folder) is not None:
        for path in folder.iterdir():
            if path == kept or path.name == state_mod.LOCK_FILE:
                continue
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
    else:
        shutil.rmtree(folder, ignore_errors=True)
    return done


def status(folder: Path, ping_timeout: float = 10) -> dict:
    """The VM, its ports, the broker, the conductor, the agent's last
    heartbeat, whether it answers rpc_ping now and whether the guest was
    prepared (null when ssh could not tell)."""
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
        "snapshot": str(st.folder / snapshot.FOLDER) if snapshot.saved(folder) else None,
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
    if vm:
        from .control import prepared
        # the agent's prepare markers: false again after 'dev reset'
        found["prepared"] = prepared(st)
    else:
        found["vm"]["console_tail"] = st.guest().console_tail(10)
    return found
