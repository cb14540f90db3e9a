"""The developer loop: one development VM that outlives the command that
started it, with its broker and a conductor, kept in one state folder.

    state.py       the state folder: what runs, where, with which key
    machine.py     up, down, status: qemu, RabbitMQ and the conductor as
                   detached processes
    sync.py        push a Trove working tree into the guest's agent
    control.py     Trove's side against the running VM: rpc, prepare, reset
    conductor.py   the background conductor (its own process) that records
                   the guest's heartbeats into the state folder
    snapshot.py    save the VM once (qemu's migration to a file), resume it
                   instead of booting
"""
