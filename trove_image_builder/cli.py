"""The trove-image-builder command line: parse, call the library, print."""
import functools
import json
from pathlib import Path
import shlex
import sys

import click
import yaml

from . import __version__, elements, profile as profiles
from .build import backends, stage as build_mod
from .plumbing import host
from .plumbing.cleanup import terminate_as_interrupt
from .errors import InputError, TroveImageBuilderError


class CommandError(click.ClickException):
    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code


def handle_errors(func):
    """Library errors become 'Error: ...' and their exit code; no traceback
    unless --debug."""
    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        debug = click.get_current_context().find_root().params.get("debug")
        try:
            return func(*args, **kwargs)
        except TroveImageBuilderError as exc:
            if debug:
                raise
            raise CommandError(exc.message, exc.exit_code) from exc
        except KeyboardInterrupt:
            if debug:
                raise
            raise CommandError("interrupted; nothing was written to the output path", 130)
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except Exception as exc:  # noqa: BLE001 - the last line of defence
            if debug:
                raise
            raise CommandError(f"internal error: {type(exc).__name__}: {exc} "
                               "(run with --debug for the traceback)", 1) from exc
    return wrapper


set_option = click.option("--set", "sets", multiple=True, metavar="KEY=VALUE",
                          help="Set a template variable, or a setting by its dotted "
                               "name (e.g. image.size=6G).")
elements_path_option = click.option(
    "--elements-path", "extra_paths", multiple=True, type=click.Path(),
    help="Another folder of DIB elements (repeatable).")


@click.group()
@click.version_option(__version__, prog_name="trove-image-builder")
@click.option("--debug", is_flag=True, help="Show tracebacks.")
def main(debug):
    """Build OpenStack Trove guest images from YAML profiles."""


@main.group("profiles")
def profiles_group():
    """List and show the shipped profiles."""


@profiles_group.command("list")
@handle_errors
def profiles_list():
    """List the shipped profiles with their description."""
    for name, path in profiles.available().items():
        try:
            desc = profiles.load(name).description
        except TroveImageBuilderError as exc:
            desc = f"(invalid: {exc.message})"
        click.echo(f"{name:24} {desc}")


@profiles_group.command("show")
@click.argument("profile")
@set_option
@elements_path_option
@handle_errors
def profiles_show(profile, sets, extra_paths):
    """Print PROFILE (a name or a YAML path) fully rendered and validated."""
    prof = profiles.load(profile, sets, known_elements=elements.discover(extra_paths))
    click.echo(f"# {prof.source}\n# digest: {prof.digest()}")
    click.echo(yaml.safe_dump(prof.to_dict(), sort_keys=False), nl=False)


@profiles_group.command("settings")
def profiles_settings():
    """List every profile setting with its allowed values."""
    for name, allowed, help_text in profiles.describe_settings():
        click.echo(f"{name:24} {allowed:36} {help_text}")


@main.group("elements")
def elements_group():
    """List the DIB elements."""


@elements_group.command("list")
@click.option("--all", "show_all", is_flag=True, help="Also list diskimage-builder's own.")
@elements_path_option
@handle_errors
def elements_list(show_all, extra_paths):
    """List the shipped elements with their one-line description."""
    for el in elements.discover(extra_paths).values():
        if el.origin == "dib" and not show_all:
            continue
        tag = f" [datastore: {el.datastore.name}]" if el.datastore else ""
        origin = "" if el.origin == "shipped" else f" ({el.origin})"
        click.echo(f"{el.name:20} {el.description}{tag}{origin}")


@main.command("check")
@click.option("--backend", default="dib", show_default=True, help="Backend to check for.")
@handle_errors
def check(backend):
    """Check the host: tools, root, loop devices, partition route, KVM or TCG."""
    back = backends.get(backend)
    found = host.checks(back.tools) + list(getattr(back, "extra_checks", list)())
    for c in found:
        mark = "ok  " if c.ok else "FAIL"
        click.echo(f"{mark} {c.name:22} {c.detail}" + (f"  -> {c.fix}" if c.fix else ""))
    host.require(found, "build")


@main.command("build")
@click.argument("profile")
@click.option("-o", "--output", type=click.Path(), help="Image path (default out/NAME.FORMAT).")
@click.option("--backend", type=click.Choice(backends.names()), default=None,
              help="Backend (default: the profile's).")
@click.option("--dry-run", is_flag=True, help="Print the command and environment; build nothing.")
@click.option("--verify", "verify_after", is_flag=True,
              help="Verify the image offline before it is moved into place; a failed "
                   "check fails the build.")
@set_option
@elements_path_option
@handle_errors
def build(profile, output, backend, dry_run, verify_after, sets, extra_paths):
    """Build PROFILE (a name or a YAML path) into a disk image."""
    known = elements.discover(extra_paths)
    prof = profiles.load(profile, sets, known_elements=known)
    if dry_run:
        plan = build_mod.plan_for(prof, output, extra_paths, known)
        build_mod.check_inputs(plan)
        back = backends.get(backend or prof.backend)
        argv, env = back.command(plan, build_mod.cache_dir() / "work" / "BUILD",
                                 build_mod.cache_dir())
        for key in sorted(env):
            click.echo(f"export {key}={shlex.quote(env[key])}")
        click.echo(shlex.join(argv))
        return
    hook = _verify_hook(prof) if verify_after else None
    image, manifest = build_mod.build(prof, output, extra_paths, backend, verify_hook=hook)
    click.echo(json.dumps({"image": str(image),
                           "sha256": manifest["image"]["sha256"],
                           "size_bytes": manifest["image"]["size_bytes"],
                           "seconds": manifest["timings"]["total"]}))


def _verify_hook(prof):
    """Offline verification of a freshly built image, before it is moved
    to the output path."""
    def hook(image, manifest, plan):
        from .contract import expectations as expect_mod
        from .verify import runner as verify_mod
        from .errors import VerifyError
        exp = expect_mod.from_profile(image, prof, plan.env.get("TROVE_DEV_SSH_PUBKEY"))
        report = verify_mod.verify(image, exp)
        if report.failed:
            names = ", ".join(o.check for o in report.failed)
            raise VerifyError(f"the built image failed verification ({names}); "
                              "nothing was written to the output path")
        manifest["verified"] = {"offline": True, "checks_passed": sum(
            1 for o in report.outcomes if o.passed), "seconds": report.seconds}
    return hook


@main.command("verify")
@click.argument("image", type=click.Path())
@click.option("--boot", is_flag=True,
              help="Also boot the image (throwaway overlay) and check it live.")
@click.option("--contract", is_flag=True,
              help="Boot, and call the guest agent over a real RabbitMQ as Trove does "
                   "(implies --boot).")
@click.option("--profile", "profile_ref", help="The profile the image was built from "
              "(default: from IMAGE.manifest.json).")
@click.option("--junit", type=click.Path(), help="Write a JUnit XML report here.")
@set_option
@handle_errors
def verify(image, boot, contract, profile_ref, junit, sets):
    """Check IMAGE: offline (mounted read-only), and booted with --boot."""
    from .contract import expectations as expect_mod
    from .verify import runner as verify_mod
    exp = expect_mod.load(Path(image), profile_ref, sets)
    with terminate_as_interrupt():
        report = verify_mod.verify(Path(image), exp, boot=boot, contract=contract,
                                   junit=Path(junit) if junit else None)
    passed = sum(1 for o in report.outcomes if o.passed)
    skipped = sum(1 for o in report.outcomes if o.skipped)
    click.echo(json.dumps({"image": str(image), "passed": passed, "skipped": skipped,
                           "failed": [f"{o.check}: {o.message}" for o in report.failed],
                           "seconds": report.seconds}))
    if report.failed:
        names = ", ".join(o.check for o in report.failed)
        raise CommandError(f"{len(report.failed)} check(s) failed for {image}: {names}", 1)


@main.command("boot")
@click.argument("image", type=click.Path())
@click.option("--ssh", "open_ssh", is_flag=True,
              help="Open an ssh session; stop the VM when it ends.")
@click.option("--profile", "profile_ref", help="The profile the image was built from "
              "(default: from IMAGE.manifest.json).")
@click.option("--certs", "certs_dir", type=click.Path(path_type=Path),
              help="Deliver DIR's ca.crt (client.crt, client.key) at boot to the "
              "certificate hook.")
@click.option("--volume", type=click.Path(path_type=Path),
              help="Attach this raw file as the data volume (made blank if missing, kept "
              "afterwards): boot again with it to play a rebuild.")
@handle_errors
def boot(image, open_ssh, profile_ref, certs_dir, volume):
    """Boot IMAGE on a throwaway overlay (dev loop): ssh in, Ctrl-C to stop."""
    import subprocess
    import time
    from .vm import boot as boot_mod
    from .contract import expectations as expect_mod
    from .plumbing.runner import run
    exp = expect_mod.load(Path(image), profile_ref)
    _guest_id, files = boot_mod.trove_files(exp)
    if certs_dir is not None:
        if not exp.cert_hook:
            raise InputError(f"--certs: {image} has no certificate hook "
                             "(its profile has certificates.enabled: false)")
        files.update(boot_mod.cert_files(certs_dir))
    if volume is not None and not volume.exists():
        run(["qemu-img", "create", "-q", "-f", "raw", str(volume), "2G"])
    with terminate_as_interrupt(), boot_mod.booted(Path(image), exp.guest_user, files,
                                                   volume=volume) as guest:
        click.echo(shlex.join(guest.ssh_argv()))
        if open_ssh:
            subprocess.run(guest.ssh_argv())
            return
        click.echo("the VM runs until Ctrl-C", err=True)
        while guest.proc.poll() is None:
            time.sleep(1)


if __name__ == "__main__":
    sys.exit(main())
