"""The background conductor of the development VM, a process of its own
(``python -m trove_image_builder.vm.dev.conductor STATE_FOLDER``): Trove's
conductor for the one guest (vm.controller.Conductor) on the VM's broker,
writing each heartbeat and notification it hears into the state folder's
heartbeats.jsonl, for 'dev status'. Stops on SIGTERM."""
import signal
import sys
import threading
from pathlib import Path

from ..controller import Conductor, trove_rpc
from . import state as state_mod


def _entry(where: str, what) -> dict:
    if where == "statuses":
        return {"kind": "status", "status": what.description, "sent": what.sent}
    if where == "notices":
        return {"kind": "notice", "type": what.kind, "event": what.event,
                "request_id": what.request_id, "message": what.one_line}
    return {"kind": where}


class RecordingConductor(Conductor):
    """vm.controller.Conductor that also writes what it hears from its
    guest into folder's journal."""

    def __init__(self, folder: Path, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.folder = folder

    def heard(self, instance_id, where, what):
        super().heard(instance_id, where, what)
        if instance_id == self.guest_id:
            state_mod.record_heard(self.folder, _entry(where, what))


def serve(folder: Path, stop: threading.Event) -> None:
    """Record what the guest sends the conductor until stop is set."""
    st = state_mod.load(folder)
    with trove_rpc(st.broker_url, manager=st.manager) as transport, \
            RecordingConductor(folder, transport, st.guest_id, st.rpc_key):
        print(f"conductor: listening for guest {st.guest_id} on {st.broker_url}",
              flush=True)
        stop.wait()
    print("conductor: stopped", flush=True)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m trove_image_builder.vm.dev.conductor STATE_FOLDER",
              file=sys.stderr)
        return 2
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    serve(Path(argv[0]), stop)
    return 0


if __name__ == "__main__":
    sys.exit(main())
