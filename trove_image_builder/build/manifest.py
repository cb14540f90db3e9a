"""What goes into a built image's manifest: what the image really holds
(read from its file system), the refusal of an image that does not hold what
the plan asked for, and the contract section the verify side reads."""
from pathlib import Path

from ..contract import paths as contract_paths
from ..contract.expectations import Expectations
from ..errors import BuildError
from ..plumbing import imagefs
from .contents import (dpkg_packages, enabled_units, os_release, upstream_version,
                       venv_packages, venv_pruned)
from .plan import BuildPlan
from .sizes import image_sizes

ENGINE_PACKAGE = "docker.io"


def contract_for(plan: BuildPlan, dev_public_key: str | None = None,
                 images=None) -> Expectations:
    """What an image built from plan must hold. images: (ref, image_id)
    pairs of the preloaded images, once known."""
    prof = plan.profile
    ds, info = prof.datastore, plan.datastore_info
    server = info.package_for(ds.version or "") if info else None
    container = ds is not None and ds.runtime == "container"
    return Expectations(
        profile=prof.name, variant=prof.variant, distro=prof.os.distro,
        release=prof.release, guest_user=prof.guest_user,
        agent_install=prof.guest_agent.install,
        agent_version=prof.guest_agent.version if prof.guest_agent.install == "release"
        else None,
        datastore=ds.name if ds else None,
        datastore_manager=info.manager if info else None,
        datastore_runtime=ds.runtime if ds else None,
        datastore_version=ds.version if ds else None,
        server_package=server,
        engine_package=ENGINE_PACKAGE if container else None,
        datastore_service=info.service if info else None,
        datastore_query=info.query or None if info else None,
        images=tuple(images) if images is not None else
        tuple((i.ref, None) for i in (ds.images if ds else ())),
        cert_hook=prof.cert_hook, cert_user_hook=bool(prof.certificates.user_hook),
        cert_volume=prof.certificates.volume if prof.cert_hook else None,
        dev_public_key=dev_public_key, paths=contract_paths.current())


def read_contents(image: Path, plan: BuildPlan, prepared=()) -> dict:
    """What the image really holds, read from its file system; prepared:
    the preloaded images the build put in, each checked against the image's
    own images.list."""
    prof = plan.profile
    paths = contract_paths.current()
    with imagefs.mounted(image) as root:
        packages = dpkg_packages(root)
        release = os_release(root)
        units = enabled_units(root)
        agent_pkgs = venv_packages(root, paths.agent_venv)
        agent_pruned = venv_pruned(root, paths.agent_venv)
        listing = root / paths.images.lstrip("/") / "images.list"
        listed = listing.read_text().splitlines() if listing.is_file() else []
        entry = (root / paths.agent_venv.lstrip("/") / "bin/trove-guestagent").exists()
        sizes = image_sizes(root, paths, image.stat().st_size)
    contents = {
        "os": {"distro": prof.os.distro, "release": prof.release,
               "os_release": {k: release.get(k) for k in
                              ("ID", "VERSION_ID", "VERSION_CODENAME", "PRETTY_NAME")}},
        "packages": packages,
        "services_enabled": units,
        "guest_agent": {"install": prof.guest_agent.install,
                        "version": agent_pkgs.get("trove"),
                        "venv": paths.agent_venv if entry else None,
                        "python_packages": agent_pkgs,
                        # metadata kept, code removed (production pruning)
                        "pruned_packages": agent_pruned},
        "datastore": None,
        # the boot-time certificate hook as enabled in the image
        "certificates": {"hook": "trove-certs.service" in units,
                         "volume": prof.certificates.volume if prof.cert_hook else None,
                         "user_hook": bool(prof.certificates.user_hook)},
        # what takes the room, in bytes (build/sizes.py; `inspect --sizes`)
        "sizes": sizes,
    }
    in_image = {(fields[0], fields[2]) for fields in (ln.split() for ln in listed)
                if len(fields) == 3}
    if prof.datastore is not None:
        info = plan.datastore_info
        server = info.package_for(prof.datastore.version or "")
        container = prof.datastore.runtime == "container"
        package = ENGINE_PACKAGE if container else server
        installed = packages.get(package)
        contents["datastore"] = {
            "name": prof.datastore.name, "manager": info.manager,
            "version": prof.datastore.version,
            "runtime": prof.datastore.runtime, "package": package,
            # the container image the agent runs at prepare, and where it came from
            "image": {"ref": info.image_ref(prof.datastore.version),
                      "source": prof.datastore.image} if container else None,
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
        raise BuildError("the image has no guest agent in "
                         f"{contract_paths.current().agent_venv}")
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
