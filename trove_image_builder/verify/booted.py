"""Booted checks: the image booted in qemu (vm.boot) with what Trove
injects, and the booted testinfra checks run over ssh; with contract, a
RabbitMQ of our own and the agent's answer to an RPC call; with prepare,
also Trove's prepare of the datastore (vm.controller) and a query from the
host through a forward to the datastore's port."""
import contextlib
from pathlib import Path
import time

from ..errors import BuildError, InputError, VerifyError
from ..plumbing import host, log
from ..vm.boot import booted, trove_files
from .runner import run_checks


def check_prepare(expect, image) -> None:
    """InputError unless the image can be prepared as Trove does: a guest
    agent, a datastore in a container, a manager Trove drives whose server
    the host can query."""
    if expect.agent_install == "none":
        raise InputError(f"--prepare: {image} is agentless (no guest agent to prepare it)")
    if expect.datastore_runtime != "container":
        what = f"runtime: {expect.datastore_runtime}" if expect.datastore else "none"
        raise InputError(f"--prepare: {image} has no datastore in a container ({what}); "
                         "the agent prepares only those")
    from ..vm.controller import check_preparable
    try:
        check_preparable(expect.datastore_manager)
    except InputError as exc:
        raise InputError(f"--prepare: {image}: {exc.message}") from exc


def booted_checks(image: Path, expect, report, contract=False, junit=None,
                  prepare=False) -> None:
    """Boot the image and run the booted checks (and the contract test;
    with prepare, the prepare test too)."""
    if prepare:
        check_prepare(expect, image)
    broker = None
    stack = contextlib.ExitStack()
    contract = contract or prepare
    try:
        forwards = ()
        ports = ()
        if contract:
            from ..vm.rabbit import LocalRabbit
            with log.step("start a RabbitMQ on 127.0.0.1 for the contract test"):
                broker = stack.enter_context(LocalRabbit())
            forwards = ((5672, broker.port),)
        overrides = {}
        if prepare:
            from ..vm.controller import agent_options, datastore_port
            ports = (datastore_port(expect.datastore_manager),)
            overrides["agent_options"] = agent_options(host.accelerator())
        injection, files = trove_files(expect, **overrides)
        start = time.monotonic()
        with log.step(f"boot {image.name} (overlay; the image is not written)"):
            guest = stack.enter_context(booted(image, expect.guest_user, files, forwards,
                                               host_forwards=ports))
            log.info(f"ssh answered after {guest.boot_seconds} s")
        report.seconds["boot"] = guest.boot_seconds
        extra = {"booted": {"guest": guest, "guest_id": injection.guest_id,
                            "rpc_key": injection.rpc_key, "tenant_id": injection.tenant_id,
                            "files": files, "broker": broker, "contract": contract,
                            "prepare": prepare, "seconds": report.seconds}}
        with log.step("booted checks over ssh"):
            run_checks("test_booted.py", guest.hostspec, expect, report, "booted",
                       junit=junit, extra_fixtures=extra,
                       host_args=(f"--ssh-config={guest.ssh_config()}",))
        report.seconds["booted"] = round(time.monotonic() - start, 1)
        if "prepare_to_healthy" in report.seconds:
            log.info(f"prepare: healthy {report.seconds['prepare_to_healthy']} s after "
                     f"prepare, a query answered after {report.seconds['prepare_to_query']} s "
                     f"(boot: {guest.boot_seconds} s; power-on to healthy: "
                     f"{report.seconds['power_on_to_healthy']} s)")
    except BuildError as exc:
        raise VerifyError(exc.message) from exc
    finally:
        stack.close()
