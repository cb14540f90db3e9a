"""Booted checks: the image booted in qemu (vm.boot) with what Trove
injects, and the booted testinfra checks run over ssh; with contract, a
RabbitMQ of our own and the agent's answer to an RPC call."""
import contextlib
from pathlib import Path
import time

from ..errors import BuildError, VerifyError
from ..plumbing import log
from ..vm.boot import booted, trove_files
from .runner import run_checks


def booted_checks(image: Path, expect, report, contract=False, junit=None) -> None:
    """Boot the image and run the booted checks (and the contract test)."""
    broker = None
    stack = contextlib.ExitStack()
    try:
        forwards = ()
        if contract:
            from ..vm.rabbit import LocalRabbit
            with log.step("start a RabbitMQ on 127.0.0.1 for the contract test"):
                broker = stack.enter_context(LocalRabbit())
            forwards = ((5672, broker.port),)
        injection, files = trove_files(expect)
        start = time.monotonic()
        with log.step(f"boot {image.name} (overlay; the image is not written)"):
            guest = stack.enter_context(booted(image, expect.guest_user, files, forwards))
            log.info(f"ssh answered after {guest.boot_seconds} s")
        report.seconds["boot"] = guest.boot_seconds
        extra = {"booted": {"guest": guest, "guest_id": injection.guest_id,
                            "rpc_key": injection.rpc_key, "files": files,
                            "broker": broker, "contract": contract}}
        with log.step("booted checks over ssh"):
            run_checks("test_booted.py", guest.hostspec, expect, report, "booted",
                       junit=junit, extra_fixtures=extra,
                       host_args=(f"--ssh-config={guest.ssh_config()}",))
        report.seconds["booted"] = round(time.monotonic() - start, 1)
    except BuildError as exc:
        raise VerifyError(exc.message) from exc
    finally:
        stack.close()
