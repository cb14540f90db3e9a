"""A build from start to finish: plan, host check, backend, manifest,
checksum, and an atomic move of the results next to the output path."""
import dataclasses
import datetime
import json
import os
from pathlib import Path
import shutil
import tempfile
import time

from .. import __version__, elements
from . import backends, images
from ..plumbing import host, imagefs, log
from ..plumbing.cleanup import release_workdir, terminate_as_interrupt
from .contents import (dpkg_packages, enabled_units, os_release, upstream_version,
                       venv_packages)
from ..errors import BuildError
from .plan import BuildPlan, check_inputs, make_plan  # noqa: F401 (check_inputs: cli)
from ..plumbing.runner import run, sha256_of

AGENT_VENV = "/opt/guest-agent-venv"


def cache_dir() -> Path:
    base = os.environ.get("TROVE_IMAGE_BUILDER_CACHE") or \
        Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "trove-image-builder"
    return Path(base)


def host_ca_bundle() -> Path | None:
    """The CA bundle the host's pip trusts, for pip inside the build."""
    for var in ("TROVE_IMAGE_BUILDER_CA_BUNDLE", "PIP_CERT", "REQUESTS_CA_BUNDLE"):
        value = os.environ.get(var)
        if value and Path(value).is_file():
            return Path(value)
    return None


def plan_for(profile, output=None, extra_paths=(), known=None) -> BuildPlan:
    known = known if known is not None else elements.discover(extra_paths)
    return make_plan(profile, output, known, extra_paths, ca_bundle=host_ca_bundle())


def sidecars(output: Path) -> dict[str, Path]:
    return {"manifest": output.with_name(output.name + ".manifest.json"),
            "sha256": output.with_name(output.name + ".sha256"),
            "log": output.with_name(output.name + ".log")}


def _tool_versions() -> dict:
    versions = {"trove-image-builder": __version__}
    try:
        from importlib.metadata import version
        versions["diskimage-builder"] = version("diskimage-builder")
    except Exception:  # noqa: BLE001 - not installed: say so
        versions["diskimage-builder"] = None
    proc = run(["qemu-img", "--version"], check=False)
    versions["qemu-img"] = (proc.stdout or "").split("\n")[0].replace("qemu-img version ", "")
    return versions


def read_contents(image: Path, plan: BuildPlan, prepared=()) -> dict:
    """What the image really holds, read from its file system; prepared:
    the preloaded images the build put in, each checked against the image's
    own images.list."""
    prof = plan.profile
    with imagefs.mounted(image) as root:
        packages = dpkg_packages(root)
        release = os_release(root)
        units = enabled_units(root)
        agent_pkgs = venv_packages(root, AGENT_VENV)
        listing = root / "var/lib/trove-images/images.list"
        listed = listing.read_text().splitlines() if listing.is_file() else []
        entry = (root / AGENT_VENV.lstrip("/") / "bin/trove-guestagent").exists()
    contents = {
        "os": {"distro": prof.os.distro, "release": prof.release,
               "os_release": {k: release.get(k) for k in
                              ("ID", "VERSION_ID", "VERSION_CODENAME", "PRETTY_NAME")}},
        "packages": packages,
        "services_enabled": units,
        "guest_agent": {"install": prof.guest_agent.install,
                        "version": agent_pkgs.get("trove"),
                        "venv": AGENT_VENV if entry else None,
                        "python_packages": agent_pkgs},
        "datastore": None,
        # the boot-time certificate hook as enabled in the image
        "certificates": {"hook": "trove-certs.service" in units,
                         "volume": prof.certificates.volume if prof.cert_hook else None,
                         "user_hook": bool(prof.certificates.user_hook)},
    }
    in_image = {(fields[0], fields[2]) for fields in (ln.split() for ln in listed)
                if len(fields) == 3}
    if prof.datastore is not None:
        info = elements.datastores(elements.discover())[prof.datastore.name].datastore
        server = info.package_for(prof.datastore.version or "")
        container = prof.datastore.runtime == "container"
        package = "docker.io" if container else server
        installed = packages.get(package)
        contents["datastore"] = {
            "name": prof.datastore.name, "version": prof.datastore.version,
            "runtime": prof.datastore.runtime, "package": package,
            "package_version": installed,
            "upstream_version": upstream_version(installed) if installed else None,
            "service": "docker" if container else info.service,
            "server_package_on_host": packages.get(server),
            "images": [{**p.manifest_entry(), "in_image": (p.ref, p.image_id) in in_image}
                       for p in prepared]}
    return contents


def check_contents(contents: dict, plan: BuildPlan) -> None:
    """Refuse an image that does not hold what the profile asked for."""
    prof = plan.profile
    ga = contents["guest_agent"]
    if prof.guest_agent.install != "none" and not ga["venv"]:
        raise BuildError(f"the image has no guest agent in {AGENT_VENV}")
    if prof.guest_agent.install == "release" and ga["version"] != prof.guest_agent.version:
        raise BuildError(f"the image's guest agent is {ga['version']}, the profile "
                         f"asks for {prof.guest_agent.version}")
    if prof.cert_hook != contents["certificates"]["hook"]:
        raise BuildError("the image's certificate hook (trove-certs.service) is "
                         f"{'enabled' if contents['certificates']['hook'] else 'missing'}, "
                         f"the profile {'asks for' if prof.cert_hook else 'does not ask for'} it")
    ds = contents["datastore"]
    missing = [i["ref"] for i in (ds or {}).get("images", []) if not i["in_image"]]
    if missing:
        raise BuildError(f"preloaded images missing from the image: {', '.join(missing)}")
    if ds and not ds["package_version"]:
        raise BuildError(f"the image lacks the package {ds['package']}")
    if ds and ds["runtime"] == "container" and ds["server_package_on_host"]:
        raise BuildError(f"a container-runtime image has the server package on the host OS "
                         f"({ds['server_package_on_host']})")


def build(profile, output=None, extra_paths=(), backend_name=None,
          verify_hook=None) -> tuple[Path, dict]:
    """Build the profile; return the image path and its manifest. Raises on
    failure, leaving nothing at the output path."""
    known = elements.discover(extra_paths)
    plan = plan_for(profile, output, extra_paths, known)
    check_inputs(plan)
    backend = backends.get(backend_name or profile.backend)
    host.require(host.checks(backend.tools) + list(getattr(backend, "extra_checks", list)()),
                 "build")
    out = plan.output.resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    timings: dict = {}
    started = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    cache = cache_dir()
    side = sidecars(out)
    try:
        with terminate_as_interrupt():
            if plan.dev_key is not None:
                with log.step("generate the per-build ssh key", timings, "ssh-key"):
                    key = workdir / "id_ed25519"
                    run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C",
                         f"trove-image-builder {profile.name} dev key", "-f", str(key)])
                    plan = dataclasses.replace(plan, env={
                        **plan.env,
                        "TROVE_DEV_SSH_PUBKEY": (workdir / "id_ed25519.pub").read_text().strip()})
            prepared = []
            if profile.datastore is not None and profile.datastore.images:
                with log.step("prepare the preloaded container images", timings, "images"):
                    prepared = images.prepare(profile.datastore.images, workdir, profile.source)
                    listed = images.write_list(prepared, workdir / "container-images.list")
                    plan = dataclasses.replace(plan, env={
                        **plan.env, "TROVE_CONTAINER_IMAGES_LIST": str(listed)})
                    for p in prepared:
                        log.info(f"{p.ref}: {p.image_id} ({p.size_bytes} bytes)")
            with log.step(f"build with {backend.name} ({len(plan.elements)} elements)",
                          timings, "backend"):
                image = backend.build(plan, workdir, cache, side["log"], timings)
            with log.step("read the image's contents", timings, "inspect"):
                contents = read_contents(image, plan, prepared)
                check_contents(contents, plan)
            with log.step("checksum", timings, "checksum"):
                digest = sha256_of(image)
            timings["total"] = round(time.monotonic() - started, 1)
            info = imagefs.image_info(image)
            manifest = {
                "schema": 1,
                "built_at": datetime.datetime.now(datetime.timezone.utc).isoformat(
                    timespec="seconds"),
                "image": {"file": out.name, "format": info["format"],
                          "size_bytes": image.stat().st_size,
                          "virtual_size_bytes": info.get("virtual-size"),
                          "sha256": digest},
                "profile": {"name": profile.name, "source": profile.source,
                            "variant": profile.variant, "digest": profile.digest(),
                            "resolved": profile.to_dict()},
                "backend": backend.name,
                "elements": list(plan.elements),
                "tools": _tool_versions(),
                "host": {"partition_route": host.partition_route()},
                **contents,
                "dev_ssh_key": str(plan.dev_key) if plan.dev_key else None,
                "timings": timings,
            }
            if verify_hook is not None:
                with log.step("verify before moving into place", timings, "verify"):
                    verify_hook(image, manifest, plan)
            (workdir / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
            (workdir / "image.sha256").write_text(f"{digest}  {out.name}\n")
            # Side files first, the image last: an image at the output path
            # always comes with its own manifest and checksum.
            os.replace(workdir / "manifest.json", side["manifest"])
            os.replace(workdir / "image.sha256", side["sha256"])
            if plan.dev_key is not None:
                os.replace(workdir / "id_ed25519", plan.dev_key)
                os.replace(workdir / "id_ed25519.pub", plan.dev_key.with_name(
                    plan.dev_key.name + ".pub"))
            os.replace(image, out)
            return plan.output, manifest
    finally:
        release_workdir(workdir)
        shutil.rmtree(workdir, ignore_errors=True)
