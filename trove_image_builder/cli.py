"""The trove-image-builder command line: parse, call the library, print."""
import json
from pathlib import Path
import shlex
import shutil
import sys

import click
import yaml

from . import __version__, elements, profile as profiles
from .build import backends, datastore_image, stage as build_mod
from .plumbing import host, log
from .plumbing.cleanup import terminate_as_interrupt
from .errors import ExitCode, InputError, TroveImageBuilderError, VerifyError


class CommandError(click.ClickException):
    """One 'Error: ...' line and an exit code from errors.ExitCode."""

    def __init__(self, message: str, exit_code: ExitCode):
        super().__init__(message)
        self.exit_code = exit_code


def command_error(exc: BaseException) -> CommandError:
    """What the user sees of an exception a command raised."""
    if isinstance(exc, TroveImageBuilderError):
        return CommandError(exc.message, exc.exit_code)
    if isinstance(exc, KeyboardInterrupt):
        return CommandError("interrupted; nothing was written to the output path",
                            ExitCode.INTERRUPTED)
    return CommandError(f"internal error: {type(exc).__name__}: {exc} "
                        "(run with --debug for the traceback)", ExitCode.INTERNAL)


class Main(click.Group):
    """The root group, the one place where whatever a command raises becomes
    'Error: ...' and an exit code; a traceback only with --debug."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except (Exception, KeyboardInterrupt) as exc:  # the last line of defence
            if ctx.params.get("debug"):
                raise
            raise command_error(exc) from exc


set_option = click.option("--set", "sets", multiple=True, metavar="KEY=VALUE",
                          help="Set a template variable, or a setting by its dotted "
                               "name (e.g. image.size=6G).")
elements_path_option = click.option(
    "--elements-path", "extra_paths", multiple=True, type=click.Path(),
    help="Another folder of DIB elements (repeatable).")


@click.group(cls=Main)
@click.version_option(__version__)    # named as run: trove-image-builder or image-builder
@click.option("--debug", is_flag=True, help="Show tracebacks.")
def main(debug):
    """Build OpenStack Trove guest images from YAML profiles."""


@main.group("profiles")
def profiles_group():
    """List and show the shipped profiles."""


def _columns(rows) -> list[str]:
    """Rows of cells as lines, each column as wide as its widest cell."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    return ["  ".join([cell.ljust(w) for cell, w in zip(row, widths)] + [row[-1]]).rstrip()
            for row in rows]


def _datastore_cell(entry: dict) -> str:
    ds = entry["datastore"]
    if ds is None:
        return "-"
    return " ".join(filter(None, (ds["name"], ds["version"]))) + f" ({ds['runtime']})"


@profiles_group.command("list")
def profiles_list():
    """List the shipped profiles: OS, datastore and description.

    \b
    Example:
      trove-image-builder profiles list
    """
    rows = [("NAME", "OS", "DATASTORE", "DESCRIPTION")]
    for name, path in profiles.available().items():
        try:
            prof = profiles.load(name)
        except TroveImageBuilderError as exc:
            rows.append((name, "?", "?", f"(invalid: {exc.message})"))
            continue
        entry = profiles.matrix_entry(prof, path)
        rows.append((name, f"{prof.os.distro} {prof.os.release}", _datastore_cell(entry),
                     prof.description))
    click.echo("\n".join(_columns(rows)))


@profiles_group.command("matrix")
@click.option("--json", "as_json", is_flag=True,
              help="Print a JSON list (by name), for CI systems to fan out on.")
def profiles_matrix(as_json):
    """Every shipped profile with its OS, datastore, variant, backend and file.

    An invalid profile fails the command (exit code 2), naming its file and field.

    \b
    Examples:
      trove-image-builder profiles matrix
      trove-image-builder profiles matrix --json
    """
    entries = profiles.matrix(known_elements=elements.discover())
    if as_json:
        click.echo(json.dumps(entries))     # one line: fits a CI output variable
        return
    rows = [("NAME", "DISTRO", "RELEASE", "DATASTORE", "VERSION", "RUNTIME", "VARIANT",
             "BACKEND", "FILE")]
    for e in entries:
        ds = e["datastore"] or {}
        rows.append((e["name"], e["os"]["distro"], e["os"]["release"], ds.get("name") or "-",
                     ds.get("version") or "-", ds.get("runtime") or "-", e["variant"],
                     e["backend"], e["file"]))
    click.echo("\n".join(_columns(rows)))


@profiles_group.command("show")
@click.argument("profile")
@set_option
@elements_path_option
def profiles_show(profile, sets, extra_paths):
    """Print PROFILE (a name or a YAML path) fully rendered and validated.

    \b
    Examples:
      trove-image-builder profiles show prod-mariadb --set image.size=6G
      trove-image-builder profiles show ./mine.yaml --elements-path ./my-elements
    """
    prof = profiles.load(profile, sets, known_elements=elements.discover(extra_paths))
    click.echo(f"# {prof.source}\n# digest: {prof.digest()}")
    click.echo(yaml.safe_dump(prof.to_dict(), sort_keys=False), nl=False)


@profiles_group.command("settings")
def profiles_settings():
    """List every profile setting with its allowed values.

    \b
    Example:
      trove-image-builder profiles settings
    """
    for name, allowed, help_text in profiles.describe_settings():
        click.echo(f"{name:24} {allowed:36} {help_text}")


@main.group("elements")
def elements_group():
    """List the DIB elements."""


@elements_group.command("list")
@click.option("--all", "show_all", is_flag=True, help="Also list diskimage-builder's own.")
@elements_path_option
def elements_list(show_all, extra_paths):
    """List the shipped elements with their one-line description.

    \b
    Examples:
      trove-image-builder elements list
      trove-image-builder elements list --all --elements-path ./my-elements
    """
    for el in elements.discover(extra_paths).values():
        if el.origin == "dib" and not show_all:
            continue
        tag = f" [datastore: {el.datastore.name}]" if el.datastore else ""
        origin = "" if el.origin == "shipped" else f" ({el.origin})"
        click.echo(f"{el.name:20} {el.description}{tag}{origin}")


@main.group("datastore-image")
def datastore_image_group():
    """Build the datastore container images the agent runs, from OS packages
    (Debian trixie, Ubuntu noble)."""


@datastore_image_group.command("list")
def datastore_image_list():
    """List the images that can be built, and whether each is in the cache.

    \b
    Example:
      trove-image-builder datastore-image list
    """
    for ref in datastore_image.known():
        found = datastore_image.cached(ref)
        state = (f"cached  {found.image_id[:19]}  {found.archive}" if found
                 else "not cached")
        click.echo(f"{ref:16} {state}")


@datastore_image_group.command("build")
@click.argument("ref")
@click.option("--mirror", help="The mirror to take the image's suite and its updates from "
              "(default: its distribution's own, e.g. http://deb.debian.org/debian for "
              "trixie, http://archive.ubuntu.com/ubuntu for noble).")
@click.option("--security-mirror",
              help="Where the suite's security updates come from (default: the "
              "distribution's own); an empty value leaves them out.")
@click.option("--rebuild", is_flag=True, help="Build even when the cache has the image.")
@click.option("-o", "--output", type=click.Path(path_type=Path),
              help="Also copy the docker-archive to this path.")
def datastore_image_build(ref, mirror, security_mirror, rebuild, output):
    """Build REF (mariadb:11.8, postgres:17, mysql:8.0) as a docker-archive,
    or take it from the cache; print a JSON summary.

    \b
    Examples:
      trove-image-builder datastore-image build mariadb:11.8
      trove-image-builder datastore-image build postgres:17 -o postgres-17.tar
      trove-image-builder datastore-image build mariadb:11.8 --rebuild --mirror http://m/debian
    """
    with terminate_as_interrupt():
        default = datastore_image.DEFAULT
        image = datastore_image.build(
            ref, mirror=mirror or default,
            security_mirror=default if security_mirror is None else (security_mirror or None),
            rebuild=rebuild)
        if output is not None:
            partial = output.with_name(f".{output.name}.partial")
            try:
                shutil.copyfile(image.archive, partial)
                partial.replace(output)
            finally:
                partial.unlink(missing_ok=True)
    server = datastore_image.recipe(ref).server_package
    summary = {"ref": image.ref, "image_id": image.image_id, "archive": str(image.archive),
               "size_bytes": image.size_bytes, "packages": len(image.packages),
               "server_package": server, "server_version": image.packages.get(server),
               "inputs_hash": image.inputs_hash}
    if output is not None:
        summary["output"] = str(output.resolve())
    click.echo(json.dumps(summary, indent=2))


@main.group("cache")
def cache_group():
    """The build cache: layers and finished images, kept under a size bound."""


def _human(n: int) -> str:
    for unit in ("B", "K", "M", "G"):
        if n < 1024 or unit == "G":
            return f"{n:.0f}{unit}" if unit == "B" else f"{n:.1f}{unit}"
        n /= 1024
    return f"{n}"


@cache_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def cache_list(as_json):
    """List the cached layers and images: kind, key, size, profile, when
    made and last used; then the folder's total and its bound.

    \b
    Examples:
      trove-image-builder cache list
      trove-image-builder cache list --json
    """
    from .build.cache import LayerCache, max_bytes, when
    cache = LayerCache()
    rows = sorted(cache.entries(), key=lambda e: e.last_used, reverse=True)
    total = sum(e.size_bytes for e in rows)
    if as_json:
        click.echo(json.dumps({
            "folder": str(cache.root), "total_bytes": total, "max_bytes": max_bytes(),
            "entries": [{"kind": e.kind, "key": e.key, "path": str(e.path),
                         "size_bytes": e.size_bytes, "profile": e.meta.get("profile"),
                         "below": e.below, "created": e.meta.get("created"),
                         "last_used": e.last_used} for e in rows]}, indent=2))
        return
    click.echo(f"{'KIND':7} {'KEY':21} {'SIZE':>8}  {'PROFILE':22} {'MADE':16}  LAST USED")
    for e in rows:
        click.echo(f"{e.kind:7} {e.key:21} {_human(e.size_bytes):>8}  "
                   f"{(e.meta.get('profile') or '-'):22} {when(e.meta.get('created', 0)):16}"
                   f"  {when(e.last_used)}")
    click.echo(f"{len(rows)} entries, {_human(total)} in {cache.root} "
               f"(bound {_human(max_bytes())}, TROVE_IMAGE_BUILDER_CACHE_MAX)")


@cache_group.command("clean")
@click.option("--all", "everything", is_flag=True, help="Remove every layer and image.")
@click.option("--older-than", type=float, metavar="DAYS",
              help="Remove what was last used more than DAYS ago.")
@click.option("--max-size", metavar="SIZE",
              help="Remove least recently used entries until the cache fits SIZE "
                   "(default: the bound, TROVE_IMAGE_BUILDER_CACHE_MAX or 30G).")
def cache_clean(everything, older_than, max_size):
    """Remove cached layers and images (an entry goes with the entries built
    on it); print what was removed and what is left.

    \b
    Examples:
      trove-image-builder cache clean                 # down to the bound
      trove-image-builder cache clean --max-size 10G
      trove-image-builder cache clean --older-than 14
      trove-image-builder cache clean --all
    """
    import time
    from .build.cache import LayerCache, max_bytes, parse_size
    cache = LayerCache()
    cache.clean_stale()
    removed = []
    if everything:
        for entry in cache.entries():
            if entry.path.exists():
                removed += cache.remove(entry)
    if older_than is not None:
        cutoff = time.time() - older_than * 86400
        for entry in cache.entries():
            if entry.last_used < cutoff and entry.path.exists():
                removed += cache.remove(entry)
    limit = parse_size(max_size, "--max-size") if max_size else max_bytes()
    removed += cache.evict(limit)
    for entry in removed:
        click.echo(f"removed {entry.kind} {entry.key} ({entry.path.name})")
    left = cache.entries()
    click.echo(f"{len(removed)} removed; {len(left)} entries, "
               f"{_human(sum(e.size_bytes for e in left))} left in {cache.root}")


@main.command("check")
@click.option("--backend", type=click.Choice(backends.names()), default="dib",
              show_default=True, help="Backend to check for.")
def check(backend):
    """Check the host: tools, root, loop devices, partition route, KVM or TCG.

    \b
    Examples:
      trove-image-builder check
      trove-image-builder check --backend virt-customize
    """
    back = backends.get(backend)
    found = back.host_checks()
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
@click.option("--explain", is_flag=True,
              help="Say for each cached layer whether it is reused or rebuilt, and why "
                   "(with --dry-run: only that).")
@click.option("--refresh", is_flag=True,
              help="Rebuild every layer (take the newest packages); the cache is updated.")
@click.option("--no-layers", is_flag=True,
              help="Build in one backend run, reusing no cached layer.")
@click.option("--sbom", "write_sbom", is_flag=True,
              help="Also write a CycloneDX SBOM beside the image (IMAGE.sbom.cdx.json).")
@set_option
@elements_path_option
def build(profile, output, backend, dry_run, verify_after, explain, refresh, no_layers,
          write_sbom, sets, extra_paths):
    """Build PROFILE (a name or a YAML path) into a disk image.

    \b
    Examples:
      trove-image-builder build prod-mariadb -o out/prod-mariadb.qcow2 --verify
      trove-image-builder build prod-mariadb --set image.size=6G --dry-run
      trove-image-builder build dev-mariadb --set trove_source=../trove
      trove-image-builder build prod-mariadb --explain --dry-run
    """
    known = elements.discover(extra_paths)
    prof = profiles.load(profile, sets, known_elements=known)
    options = build_mod.Options(layers=not no_layers, refresh=refresh)
    if dry_run:
        plan = build_mod.plan_for(prof, output, extra_paths, known)
        build_mod.check_inputs(plan)
        if write_sbom:
            log.info(f"--sbom: would write {_sbom_path(plan.output)} (dry run: not written)")
        back = backends.get(backend or prof.backend)
        if explain:
            for line in build_mod.explain(prof, output, extra_paths, backend, options):
                click.echo(line)
            return
        for line in back.describe(plan, build_mod.cache_dir() / "work" / "BUILD",
                                  build_mod.cache_dir()):
            click.echo(line)
        return
    if explain:
        for line in build_mod.explain(prof, output, extra_paths, backend, options):
            log.info(line)
    if not verify_after:
        image, manifest = build_mod.build(prof, output, extra_paths, backend, options)
    else:
        # stage, verify the staged image, publish: a failed check leaves
        # nothing at the output path
        from .contract.expectations import from_manifest
        from .verify import runner as verify_mod
        with build_mod.staged(prof, output, extra_paths, backend, options) as st:
            with log.step("verify before moving into place", st.manifest["timings"],
                          "verify"):
                report = verify_mod.verify(st.image, from_manifest(st.image, st.manifest))
            if report.failed:
                names = ", ".join(o.check for o in report.failed)
                raise VerifyError(f"the built image failed verification ({names}); "
                                  "nothing was written to the output path")
            st.manifest["verified"] = {"offline": True, "checks_passed": sum(
                1 for o in report.outcomes if o.passed), "seconds": report.seconds}
            image, manifest = build_mod.publish(st)
    result = {"image": str(image), "sha256": manifest["image"]["sha256"],
              "size_bytes": manifest["image"]["size_bytes"],
              "seconds": manifest["timings"]["total"]}
    if manifest.get("layers"):
        result["layers"] = {o["name"]: "reused" if o["reused"] else "rebuilt"
                            for o in [*manifest["layers"]["layers"],
                                      manifest["layers"]["image"]]}
    if write_sbom:
        result["sbom"] = _write_sbom(Path(image))
    click.echo(json.dumps(result))


def _expectations(image, profile_ref, sets, extra_paths):
    """What IMAGE must hold: its manifest's contract, or with --profile what
    a build of that profile (--set, --elements-path) would hold."""
    from .contract import expectations as expect_mod
    image = Path(image)
    if not profile_ref:
        if sets or extra_paths:
            raise InputError("--set and --elements-path describe a profile: give it with "
                             "--profile (without it, the image's manifest says what it holds)")
        return expect_mod.load(image)
    if not image.is_file():
        raise InputError(f"{image}: no such image file")
    from .build.manifest import contract_for
    known = elements.discover(extra_paths)
    prof = profiles.load(profile_ref, sets, known_elements=known)
    plan = build_mod.plan_for(prof, image, extra_paths, known)
    manifest = expect_mod.read_manifest(image) or {}
    built = expect_mod.from_manifest(image, manifest) if manifest else None
    return contract_for(plan, built.dev_public_key if built else None,
                        built.images if built and built.images else None).for_image(image)


@main.command("verify")
@click.argument("image", type=click.Path())
@click.option("--boot", is_flag=True,
              help="Also boot the image (throwaway overlay) and check it live.")
@click.option("--contract", is_flag=True,
              help="Boot, and call the guest agent over a real RabbitMQ as Trove does "
                   "(implies --boot).")
@click.option("--prepare", is_flag=True,
              help="Also send Trove's prepare and wait for 'healthy', create a database "
                   "and a user through the agent, query it from the host (implies "
                   "--contract; the datastore from the manifest).")
@click.option("--profile", "profile_ref", help="The profile the image was built from "
              "(default: from IMAGE.manifest.json).")
@click.option("--junit", type=click.Path(), help="Write a JUnit XML report here.")
@set_option
@elements_path_option
def verify(image, boot, contract, prepare, profile_ref, junit, sets, extra_paths):
    """Check IMAGE: offline (mounted read-only), and booted with --boot.

    \b
    Examples:
      trove-image-builder verify out/prod-mariadb.qcow2
      trove-image-builder verify out/prod-mariadb.qcow2 --contract --junit report.xml
      trove-image-builder verify out/prod-postgresql.qcow2 --prepare
      trove-image-builder verify out/x.qcow2 --profile ./mine.yaml --elements-path ./mine
    """
    from .verify import runner as verify_mod
    exp = _expectations(image, profile_ref, sets, extra_paths)
    if prepare:
        from .verify.booted import check_prepare
        check_prepare(exp, image)
    with terminate_as_interrupt():
        report = verify_mod.verify(Path(image), exp, boot=boot, contract=contract or prepare,
                                   junit=Path(junit) if junit else None, prepare=prepare)
    passed = sum(1 for o in report.outcomes if o.passed)
    skipped = sum(1 for o in report.outcomes if o.skipped)
    click.echo(json.dumps({"image": str(image), "passed": passed, "skipped": skipped,
                           "failed": [f"{o.check}: {o.message}" for o in report.failed],
                           "seconds": report.seconds}))
    if report.failed:
        names = ", ".join(o.check for o in report.failed)
        raise CommandError(f"{len(report.failed)} check(s) failed for {image}: {names}",
                           ExitCode.FAILED)


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
@set_option
@elements_path_option
def boot(image, open_ssh, profile_ref, certs_dir, volume, sets, extra_paths):
    """Boot IMAGE on a throwaway overlay (dev loop): ssh in, Ctrl-C to stop.

    \b
    Examples:
      trove-image-builder boot out/dev-mariadb.qcow2 --ssh
      trove-image-builder boot out/prod-mariadb.qcow2 --certs ./certs --volume vol.raw
    """
    import subprocess
    import time
    from .vm import boot as boot_mod
    from .plumbing.runner import run
    exp = _expectations(image, profile_ref, sets, extra_paths)
    injection, files = boot_mod.trove_files(exp)
    if certs_dir is not None:
        if not exp.cert_hook:
            raise InputError(f"--certs: {image} has no certificate hook "
                             "(its profile has certificates.enabled: false)")
        files.update(boot_mod.cert_files(certs_dir, exp.paths.cert_staging))
    if volume is not None and not volume.exists():
        run(["qemu-img", "create", "-q", "-f", "raw", str(volume), "2G"])
    with terminate_as_interrupt(), boot_mod.booted(Path(image), exp.guest_user, files,
                                                   volume=volume) as guest:
        click.echo(shlex.join(guest.ssh_argv()))
        # what a controller needs to call this agent (guest_info.conf has them too)
        click.echo(f"guest_id {injection.guest_id}; instance_rpc_encr_key "
                   f"{injection.rpc_key}", err=True)
        if open_ssh:
            subprocess.run(guest.ssh_argv())
            return
        click.echo("the VM runs until Ctrl-C", err=True)
        while guest.proc.poll() is None:
            time.sleep(1)


@main.command("inspect")
@click.argument("image", type=click.Path())
@click.option("--sizes", "show_sizes", is_flag=True,
              help="Print the size report: image, file system, kernel, agent venv, "
                   "preloaded images, biggest packages.")
@click.option("--json", "as_json", is_flag=True,
              help="Print JSON (with --sizes: the manifest's sizes section, in bytes).")
def inspect_image(image, show_sizes, as_json):
    """Show what IMAGE's manifest (IMAGE.manifest.json) says: a summary, or
    with --sizes what takes the room in the image.

    \b
    Examples:
      trove-image-builder inspect out/prod-mariadb.qcow2
      trove-image-builder inspect out/prod-mariadb.qcow2 --sizes
      trove-image-builder inspect out/prod-mariadb.qcow2 --sizes --json
    """
    from .build import report
    manifest = report.load(Path(image))
    if show_sizes:
        sizes = report.sizes_of(Path(image), manifest)
        lines = [json.dumps(sizes, indent=2)] if as_json else \
            report.sizes_lines(manifest, sizes)
    else:
        lines = [json.dumps(report.summary(manifest), indent=2)] if as_json else \
            report.summary_lines(manifest)
    click.echo("\n".join(lines))


# --------------------------------------------------------------------------
# From image to cloud (trove_image_builder/release/): publish, register, sbom, diff

# -- publish (release/glance.py)

@main.command("publish")
@click.argument("image", type=click.Path(path_type=Path))
@click.option("--os-cloud", "cloud", metavar="NAME",
              help="The cloud of clouds.yaml to publish to (default: OS_CLOUD, "
                   "else the OS_* variables).")
@click.option("--name", help="The Glance image name (default: the file's stem and the "
                             "first 12 hex digits of the manifest digest).")
@click.option("--visibility", type=click.Choice(["private", "shared", "community", "public"]),
              default="private", show_default=True, help="Who may see the image.")
@click.option("--owner", metavar="PROJECT_ID",
              help="The project that owns the image, e.g. Trove's service project.")
@click.option("--register", "then_register", is_flag=True,
              help="Then register the datastore version in Trove with this image's id "
                   "(as the register command, with --config-file and --trove-manage).")
@click.option("--config-file", default="/etc/trove/trove.conf", show_default=True,
              type=click.Path(path_type=Path), help="With --register: Trove's config file.")
@click.option("--trove-manage", "trove_manage", metavar="PATH",
              help="With --register: the site's trove-manage (default: on PATH).")
@click.option("--dry-run", is_flag=True,
              help="Check the image against its manifest (and, with --register, what "
                   "registering needs) and print what would be sent; no upload.")
def publish(image, cloud, name, visibility, owner, then_register, config_file, trove_manage,
            dry_run):
    """Upload IMAGE to Glance with the properties and tags its manifest
    (IMAGE.manifest.json) gives, after checking it against the manifest's
    sha256; an image with the same content already in Glance is reused.
    Progress on stderr; the image as Glance holds it, as JSON on stdout.
    The cloud: --os-cloud (clouds.yaml), OS_CLOUD, or the OS_* variables
    (OS_AUTH_TYPE=none with OS_ENDPOINT for a Glance without Keystone).

    \b
    Examples:
      trove-image-builder publish out/prod-mariadb.qcow2 --os-cloud mycloud
      trove-image-builder publish out/prod-mariadb.qcow2 --owner SERVICE_PROJECT_ID
      trove-image-builder publish out/prod-mariadb.qcow2 --visibility shared --name mariadb-11.8
      trove-image-builder publish out/prod-mariadb.qcow2 --register --config-file trove.conf
      trove-image-builder publish out/prod-mariadb.qcow2 --dry-run
    """
    from .release import glance, register as registering
    if then_register:       # what register checks before it writes, before the upload
        registering.preflight(image, config_file, trove_manage=trove_manage)
    if dry_run:
        click.echo(json.dumps(glance.dry_run(image, name=name, visibility=visibility,
                                             owner=owner), indent=2))
        return
    result = glance.publish_image(image, cloud=cloud, name=name, visibility=visibility,
                                  owner=owner)
    if then_register:
        try:
            result["registration"] = registering.register(
                image, config_file, image_id=result["id"], trove_manage=trove_manage)
        except TroveImageBuilderError as exc:
            exc.message = f"published as Glance image {result['id']}, not registered: " \
                f"{exc.message}"
            raise
    click.echo(json.dumps(result, indent=2))


# -- register (release/register.py)

@main.command("register")
@click.argument("image", type=click.Path(path_type=Path))
@click.option("--config-file", default="/etc/trove/trove.conf", show_default=True,
              type=click.Path(path_type=Path),
              help="Trove's config file: trove-manage reads it, and its [database] "
                   "connection is read back.")
@click.option("--trove-manage", "trove_manage", metavar="PATH",
              help="The site's trove-manage (default: trove-manage on PATH).")
@click.option("--image-id", metavar="ID",
              help="The Glance image's id (default: none; Trove finds the newest image "
                   "tagged trove, DATASTORE and DATASTORE-VERSION).")
@click.option("--version-name", metavar="NAME",
              help="The datastore version's name (default: its version number).")
@click.option("--no-default", is_flag=True,
              help="Leave the datastore's default version as it is.")
@click.option("--inactive", is_flag=True,
              help="Register the version inactive (needs --no-default).")
def register_command(image, config_file, trove_manage, image_id, version_name, no_default,
                     inactive):
    """Register IMAGE's datastore version in Trove with trove-manage.

    Datastore, manager and version come from IMAGE's manifest (or name the
    manifest itself). Runs the site's trove-manage as devstack does, loads
    Trove's validation rules for the manager, reads the result back from
    Trove's database and prints it as JSON. On any failure Trove's datastore
    tables are restored as they were.

    \b
    Examples:
      trove-image-builder register out/prod-mariadb.qcow2
      trove-image-builder register out/prod-mariadb.qcow2 --image-id 5f1c... --no-default
      trove-image-builder register out/x.qcow2 --trove-manage /opt/trove/bin/trove-manage
      trove-image-builder register out/prod-mariadb.qcow2.manifest.json --config-file trove.conf
    """
    from .release import register as registering
    result = registering.register(image, config_file, image_id=image_id,
                                  version_name=version_name, default=not no_default,
                                  active=not inactive, trove_manage=trove_manage)
    click.echo(json.dumps(result, indent=2))


# -- sbom and diff (release/sbom.py, release/diff.py)

def _sbom_path(image: Path) -> Path:
    from .release import sbom as sbom_mod
    return sbom_mod.default_path(Path(image))


def _write_sbom(image: Path) -> str:
    """Write IMAGE.sbom.cdx.json beside a built image (build --sbom); its path."""
    from .release import sbom as sbom_mod
    with log.step("SBOM (CycloneDX)"):
        doc = sbom_mod.make(image)
        out = sbom_mod.write(doc, sbom_mod.default_path(image))
        log.info(f"{out}: {doc.counts['total']} components")
    return str(out)


@main.command("sbom")
@click.argument("image", type=click.Path())
@click.option("-o", "--output", metavar="FILE",
              help="Where to write it; '-' for stdout (default: IMAGE.sbom.cdx.json beside "
                   "the image, or beside the manifest named).")
def sbom_command(image, output):
    """Write a CycloneDX SBOM of IMAGE (an image, or its manifest file): OS
    packages, the agent's Python packages, preloaded container images, the
    datastore; validated against the CycloneDX schema before it is written.

    \b
    Examples:
      trove-image-builder sbom out/prod-mariadb.qcow2
      trove-image-builder sbom out/prod-mariadb.qcow2.manifest.json -o - | jq .components
    """
    from .release import sbom as sbom_mod
    source = sbom_mod.load(Path(image))
    with log.step(f"SBOM (CycloneDX) of {image}"):
        doc = sbom_mod.of(*source)
    if output == "-":
        click.echo(doc.text, nl=False)
        log.info(sbom_mod.summary(doc, "-"))
        return
    out = sbom_mod.write(doc, Path(output) if output else sbom_mod.default_path(Path(image)))
    click.echo(sbom_mod.summary(doc, str(out)))


@main.command("diff")
@click.argument("a", type=click.Path())
@click.argument("b", type=click.Path())
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.pass_context
def diff_command(ctx, a, b, as_json):
    """Show what differs between images A and B (or their manifest files):
    OS, packages, guest agent, services, datastore and its images; sizes and
    checksums are shown, not compared. Exit code 0 when the content is the
    same, 1 when it differs, 2 for bad input.

    \b
    Examples:
      trove-image-builder diff out/old/prod-mariadb.qcow2 out/prod-mariadb.qcow2
      trove-image-builder diff a.qcow2.manifest.json b.qcow2.manifest.json --json
    """
    from .release import diff as diff_mod
    result = diff_mod.diff(Path(a), Path(b))
    click.echo(json.dumps(result, indent=2) if as_json
               else "\n".join(diff_mod.text_lines(result)))
    if not result["equal"]:
        ctx.exit(int(ExitCode.FAILED))


# --------------------------------------------------------------------------
# dev: the developer loop (trove_image_builder/vm/dev/)

def _dev_folder(ctx) -> Path:
    return ctx.find_object(DevContext).folder


class DevContext:
    def __init__(self, folder: Path):
        self.folder = folder


@main.group("dev")
@click.option("--state", "state_dir", type=click.Path(path_type=Path),
              envvar="TROVE_IMAGE_BUILDER_DEV_STATE",
              help="The development VM's state folder (default: dev/vm in the cache "
                   "folder; TROVE_IMAGE_BUILDER_DEV_STATE).")
@click.pass_context
def dev_group(ctx, state_dir):
    """Developer loop: one development VM with its broker and conductor."""
    ctx.obj = DevContext((state_dir or build_mod.cache_dir() / "dev" / "vm").resolve())


@dev_group.command("up")
@click.option("--profile", "profile_ref", default="dev-mariadb", show_default=True,
              help="The profile to build the image from (cached by its digest).")
@click.option("--trove-src", type=click.Path(path_type=Path),
              help="The local Trove checkout: built into the image, and what 'dev sync' "
                   "sends (default: the image's).")
@click.option("--image", type=click.Path(path_type=Path),
              help="Boot this image instead of building one (its manifest beside it).")
@click.option("--snapshot", "save", is_flag=True,
              help="Once the agent has answered after the boot, save the VM (paused for "
                   "its state and disk copies) so that 'dev down --keep-snapshot' and a "
                   "later 'dev up' resume it instead of booting.")
@click.option("--boot", "fresh", is_flag=True,
              help="Boot, even when a snapshot is kept in the state folder.")
@set_option
@elements_path_option
@click.pass_context
def dev_up(ctx, profile_ref, trove_src, image, save, fresh, sets, extra_paths):
    """Build (cached) and boot the development VM with a local RabbitMQ and
    a conductor; wait for the agent. A second 'dev up' reuses what runs; a
    snapshot kept by 'dev down --keep-snapshot' is resumed instead of a boot.

    \b
    Examples:
      trove-image-builder dev up
      trove-image-builder dev up --profile dev-mariadb --trove-src ~/src/trove
      trove-image-builder dev up --image out/dev-mariadb.qcow2 --snapshot
    """
    from .vm.dev import sync
    from .vm.dev.state import locked
    folder = _dev_folder(ctx)
    if trove_src is not None:
        trove_src = sync.check_tree(trove_src)
    with locked(folder, "up", create=True), terminate_as_interrupt():
        st, timings = _dev_up(folder, profile_ref, trove_src, image, sets, extra_paths,
                              save, not fresh)
    click.echo(json.dumps({"state": str(st.folder), "image": st.image,
                           "ssh": shlex.join(st.guest().ssh_argv()), "guest_id": st.guest_id,
                           "broker": st.broker_url, "forwards": st.forwarded,
                           "trove_src": st.trove_src, "seconds": timings}, indent=2))


def _dev_up(folder, profile_ref, trove_src, image, sets, extra_paths, save=False,
            resume=True):
    from .contract import expectations as expect_mod
    from .vm.dev import machine
    expect = None
    resume = resume and machine.resumable(folder, image)
    if not resume and machine.existing(folder) is None:
        if image is None:
            set_src = [f"trove_source={trove_src}"] if trove_src else []
            known = elements.discover(extra_paths)
            prof = profiles.load(profile_ref, [*sets, *set_src], known_elements=known)
            digest = prof.digest().rpartition(":")[2][:16]
            image = build_mod.cache_dir() / "dev" / "images" / \
                f"{prof.name}-{digest}.{prof.image.format}"
            if not image.is_file():
                build_mod.build(prof, image, extra_paths, None)
            else:
                log.info(f"the image of {prof.name} with this profile is built: {image}")
        expect = expect_mod.load(image)
    return machine.up(folder, image, expect, str(trove_src) if trove_src else None,
                      save=save, resume=resume)


@dev_group.command("status")
@click.pass_context
def dev_status(ctx):
    """Show the VM, its ports, the broker, the conductor, the agent's last
    heartbeat, whether it answers rpc_ping and whether the guest was prepared.

    \b
    Example:
      trove-image-builder dev status
    """
    from .vm.dev import machine
    click.echo(json.dumps(machine.status(_dev_folder(ctx)), indent=2))


@dev_group.command("sync")
@click.option("--trove-src", type=click.Path(path_type=Path),
              help="The Trove tree to send (default: the one given to 'dev up').")
@click.option("--no-restart", is_flag=True, help="Send and install, but leave the agent "
              "running as it is.")
@click.pass_context
def dev_sync(ctx, trove_src, no_restart):
    """Push the changed files of the Trove tree into the guest, make the
    agent use them, restart it; time the transfer, the restart and its
    first answer.

    \b
    Examples:
      trove-image-builder dev sync
      trove-image-builder dev sync --trove-src ~/src/trove
    """
    from .vm.dev import state, sync
    folder = _dev_folder(ctx)
    with state.locked(folder, "sync"), terminate_as_interrupt():
        result = sync.sync(state.running(folder), trove_src, restart=not no_restart)
    click.echo(json.dumps(result, indent=2))


@dev_group.command("prepare")
@click.pass_context
def dev_prepare(ctx):
    """Play Trove's prepare against the VM: prepare, 'healthy', a database,
    a user, a query from the host.

    \b
    Example:
      trove-image-builder dev prepare
    """
    from .vm.dev import control, state
    folder = _dev_folder(ctx)
    with state.locked(folder, "prepare"), terminate_as_interrupt():
        result = control.prepare(state.running(folder))
    click.echo(json.dumps(result, indent=2))


@dev_group.command("rpc")
@click.argument("method")
@click.argument("arguments", nargs=-1)
@click.option("--timeout", type=float, default=60, show_default=True,
              help="Seconds to wait for the answer.")
@click.pass_context
def dev_rpc(ctx, method, arguments, timeout):
    """Call the agent's METHOD as Trove does, with key=value ARGUMENTS (JSON
    values, or strings); print the answer as JSON.

    \b
    Examples:
      trove-image-builder dev rpc rpc_ping
      trove-image-builder dev rpc list_databases limit=10
      trove-image-builder dev rpc get_filesystem_stats fs_path=/var/lib/mysql
    """
    from .vm.dev import control, state
    kwargs = control.parse_arguments(arguments)
    answer = control.call(state.running(_dev_folder(ctx)), method, kwargs, timeout)
    click.echo(json.dumps(answer, indent=2, default=str))


@dev_group.command("reset")
@click.pass_context
def dev_reset(ctx):
    """Bring the guest back to "booted, never prepared" without a new boot:
    no datastore container, the volume wiped, no prepare markers.

    \b
    Example:
      trove-image-builder dev reset
    """
    from .vm.dev import control, state
    folder = _dev_folder(ctx)
    with state.locked(folder, "reset"), terminate_as_interrupt():
        result = control.reset(state.running(folder))
    click.echo(json.dumps(result, indent=2))


@dev_group.command("ssh", context_settings={"ignore_unknown_options": True})
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
@click.pass_context
def dev_ssh(ctx, command):
    """Open a shell in the guest, or run COMMAND there (put options after
    '--': dev ssh -- sudo docker ps -a); exits with its code.

    \b
    Examples:
      trove-image-builder dev ssh
      trove-image-builder dev ssh uptime
    """
    import subprocess
    from .vm.dev import state
    st = state.running(_dev_folder(ctx))
    ctx.exit(subprocess.run(st.guest().ssh_argv(*command)).returncode)


@dev_group.command("logs")
@click.option("-f", "--follow", is_flag=True, help="Keep printing what the agent writes.")
@click.option("-n", "--lines", type=int, default=100, show_default=True,
              help="How many of the last lines to show.")
@click.option("--journal", is_flag=True, help="The agent unit's journal instead of its "
              "log file.")
@click.pass_context
def dev_logs(ctx, follow, lines, journal):
    """Show the agent's log file (or its journal).

    \b
    Examples:
      trove-image-builder dev logs -f
      trove-image-builder dev logs --journal -n 50
    """
    import subprocess
    from .vm.dev import state
    st = state.running(_dev_folder(ctx))
    if journal:
        command = f"sudo journalctl -u {st.agent_unit} --no-pager -n {lines}"
        command += " -f" if follow else ""
    else:
        command = f"sudo tail -n {lines}{' -F' if follow else ''} {shlex.quote(st.agent_log)}"
    ctx.exit(subprocess.run(st.guest().ssh_argv(command)).returncode)


@dev_group.command("down")
@click.option("--keep-snapshot", is_flag=True,
              help="Keep the VM saved by 'dev up --snapshot': the next 'dev up' resumes it.")
@click.pass_context
def dev_down(ctx, keep_snapshot):
    """Stop the VM, its broker and conductor; remove the state folder.

    \b
    Examples:
      trove-image-builder dev down
      trove-image-builder dev down --keep-snapshot
    """
    from .vm.dev import machine, state
    folder = _dev_folder(ctx)
    with state.locked(folder, "down"):
        stopped = machine.down(folder, keep_snapshot=keep_snapshot)
    click.echo(json.dumps({"stopped": stopped}))


if __name__ == "__main__":
    sys.exit(main())
