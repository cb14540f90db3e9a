"""Trove's side against the running development VM: call any agent method,
play the prepare exchange, and reset the guest to "booted, never prepared"."""
import json
import shlex
import time

from ...errors import InputError, VerifyError
from ...plumbing import log
from . import machine, state as state_mod
from .state import DevState

PREPARE_MARKERS = (".guestagent.prepare.start", ".guestagent.prepare.end")
RPC_TIMEOUT = 60


def parse_arguments(pairs) -> dict:
    """key=value pairs as an RPC's keyword arguments: a value that reads as
    JSON is taken as such (10, true, null, [..], {..}), any other as a string."""
    found = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.isidentifier():
            raise InputError(f"{pair!r}: arguments are key=value (a value in JSON, or a "
                             "string)")
        try:
            found[key] = json.loads(value)
        except ValueError:
            found[key] = value
    return found


def call(st: DevState, method: str, arguments: dict, timeout: float = RPC_TIMEOUT):
    """Call method on the agent as Trove's API does (its client, the
    instance's key, a request context); the answer."""
    if not method.isidentifier():
        raise InputError(f"{method!r} is not a method name")
    from trove.common import exception as trove_exception
    from ..controller import Taskmanager, trove_rpc
    with trove_rpc(st.broker_url, manager=st.manager) as transport:
        tasks = Taskmanager(transport, st.guest_id, st.rpc_key, st.tenant_id)
        try:
            return tasks.call(method, timeout, **arguments)
        except trove_exception.GuestTimeout as exc:
            raise VerifyError(f"the agent did not answer {method} within {timeout:.0f} s "
                              "('dev logs' shows what it did)") from exc
        except trove_exception.GuestError as exc:
            said = " ".join(str(exc).split())
            raise VerifyError(f"the agent failed {method}: {said[:400]}") from exc


def prepared(st: DevState) -> bool | None:
    """The agent marked a prepare as begun (its marker files); None when
    the guest could not be asked (ssh failed)."""
    if not st.agent_state:
        return False
    markers = " -o ".join(f"-e {st.agent_state}/{name}" for name in PREPARE_MARKERS)
    code = st.guest().ssh(f"test {markers}", timeout=60).returncode
    return {0: True, 1: False}.get(code)


def prepare(st: DevState) -> dict:
    """Trove's prepare exchange (vm.controller.prove_prepare) against the
    VM: prepare, 'healthy', a database, a user, a query from the host. The
    background conductor steps aside meanwhile (two conductors would share
    the guest's messages) and hears on afterwards."""
    if not st.preparable:
        raise InputError(f"{st.image} cannot be prepared as Trove does (no agent, no "
                         "datastore in a container, or a manager Trove does not drive)")
    if prepared(st):
        raise InputError("the guest was prepared already; 'trove-image-builder dev reset' "
                         "brings it back to never prepared")
    from ..controller import PrepareError, prove_prepare
    machine.stop_conductor(st)
    statuses, notices = (), ()
    try:
        with log.step("prepare (Trove's taskmanager and conductor, played here)"):
            try:
                result = prove_prepare(st.broker_url, st.guest_id, st.rpc_key, st.manager,
                                       st.datastore_version, st.forwarded,
                                       memory_mb=st.memory_mb, tenant_id=st.tenant_id)
            except PrepareError as exc:
                statuses, notices = exc.statuses, exc.notices
                raise VerifyError(f"{exc.message}\n{tails(st)}") from exc
            statuses, notices = result.statuses, result.notices
    finally:
        _record(st, statuses, notices)
        machine.start_conductor(st)
    return {"prepare_to_healthy": result.prepare_to_healthy,
            "prepare_to_query": result.prepare_to_query, "database": result.database,
            "user": result.user, "heartbeats": len(result.statuses)}


def _record(st: DevState, statuses, notices) -> None:
    """What prove_prepare's own conductor heard, into the state's journal."""
    now, wall = time.monotonic(), time.time()
    for status in statuses:
        state_mod.record_heard(st.folder, {"kind": "status", "status": status.description,
                                           "sent": status.sent,
                                           "heard_at": round(wall - (now - status.at), 3)})
    for notice in notices:
        state_mod.record_heard(st.folder, {
            "kind": "notice", "type": notice.kind, "event": notice.event,
            "request_id": notice.request_id, "message": notice.one_line,
            "heard_at": round(wall - (now - notice.at), 3)})


def tails(st: DevState, lines: int = 30) -> str:
    """The datastore container's log and the agent's, for a failure message."""
    from ..controller import CONTAINER
    out = []
    for command in (f"docker logs --tail {lines} {CONTAINER}",
                    f"tail -n {lines} {st.agent_log}"):
        proc = st.guest().ssh(f"sudo {command} 2>&1", timeout=60)
        out.append(f"{command}:\n{proc.stdout.strip()}")
    return "\n".join(out)


def reset_commands(st: DevState) -> list[str]:
    """What brings the guest back to "booted, never prepared": no datastore
    container, the volume unmounted, out of fstab and wiped, no prepare
    markers, the agent restarted. Trove 26's agent formats and mounts an
    unmounted volume each time it starts (trove/cmd/guest.py), so the guest
    ends with a fresh file system there, as after its first boot."""
    from ..controller import CONTAINER, device_path, mount_point
    commands = [f"docker rm -f {CONTAINER} >/dev/null 2>&1 || true"]
    if st.manager and st.preparable:
        device, mount = device_path(st.manager), mount_point(st.manager)
        quoted = shlex.quote(mount)
        commands += [f"if mountpoint -q {quoted}; then umount {quoted}; fi",
                     # the agent appends '<device>\t<mount point>\t...' to fstab
                     f"sed -i '\\|^{device}[[:space:]]|d' /etc/fstab",
                     f"if [ -b {device} ]; then wipefs -a -q {device}; fi"]
    if st.agent_state:
        commands.append("rm -f " + " ".join(f"{st.agent_state}/{name}"
                                            for name in PREPARE_MARKERS))
    commands.append(f"systemctl restart {st.agent_unit}")
    return commands


def reset(st: DevState) -> dict:
    """Run reset_commands as root in the guest; wait for the agent."""
    script = "set -e; " + "; ".join(reset_commands(st))
    seconds = {}
    with log.step("reset the guest (container, volume, prepare markers, agent)",
                  seconds, "reset"):
        proc = st.guest().ssh(f"sudo sh -c {shlex.quote(script)}", timeout=300)
        if proc.returncode != 0:
            said = (proc.stderr.strip() or proc.stdout.strip()).splitlines()[-2:]
            raise VerifyError(f"the reset failed in the guest (exit {proc.returncode}): "
                              + " / ".join(said))
    state_mod.record_heard(st.folder, {"kind": "reset"})
    seconds["first_answer"] = machine.wait_for_agent(st, "wait for the agent's answer")
    return {"seconds": seconds}
