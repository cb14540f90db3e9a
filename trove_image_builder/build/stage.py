"""A build from start to finish, in two steps: ``staged`` (plan, host
check, backend, manifest, checksum, all in a staging folder beside the
output path) and ``publish`` (an atomic move of the results into place).
Whatever runs between the two (``build --verify``) sees the finished image
before anyone else can; a staged image that is not published is removed."""
import contextlib
from dataclasses import dataclass
import datetime
import json
import os
from pathlib import Path
import shutil
import tempfile
import time

from .. import __version__, elements
from . import backends, images, layered, layers
from .cache import LayerCache, cache_dir
from .datastore_image import build as build_datastore_image, cached as cached_datastore_image
from .datastore_image import mirrors_for
from ..plumbing import host, imagefs, log
from ..plumbing.cleanup import release_workdir, terminate_as_interrupt
from ..plumbing.runner import run, sha256_of
from .manifest import check_contents, contract_for, read_contents
from .plan import BuildPlan, check_inputs, make_plan, obtain_keyring

MANIFEST_SCHEMA = 2


def host_ca_bundle() -> Path | None:
    """The CA bundle the host's pip trusts, for pip inside the build."""
    for var in ("TROVE_IMAGE_BUILDER_CA_BUNDLE", "PIP_CERT", "REQUESTS_CA_BUNDLE"):
        value = os.environ.get(var)
        if value and Path(value).is_file():
            return Path(value)
    return None


def plan_for(profile, output=None, extra_paths=(), known=None, **inputs) -> BuildPlan:
    """The plan for profile; inputs: what only a started build has
    (dev_public_key, images_list), else placeholders."""
    known = known if known is not None else elements.discover(extra_paths)
    return make_plan(profile, output, known, extra_paths, ca_bundle=host_ca_bundle(),
                     **inputs)


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


@dataclass
class Staged:
    """A finished build in its staging folder, not yet at the output path."""
    plan: BuildPlan
    image: Path
    manifest: dict
    workdir: Path
    out: Path


@dataclass(frozen=True)
class Options:
    """How to build: in layers (reusing cached ones) or in one backend
    run; --refresh rebuilds every layer."""
    layers: bool = True
    refresh: bool = False


@contextlib.contextmanager
def staged(profile, output=None, extra_paths=(), backend_name=None,
           options: Options = Options()):
    """Build the profile into a staging folder beside the output path; yield
    a Staged. On leaving, the staging folder goes, with anything that was not
    published; nothing is ever left half-written at the output path."""
    known = elements.discover(extra_paths)
    preview = plan_for(profile, output, extra_paths, known)
    check_inputs(preview)
    backend = backends.get(backend_name or profile.backend)
    host.require(backend.host_checks(), "build")
    out = preview.output.resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        with terminate_as_interrupt():
            timings: dict = {}
            started = time.monotonic()
            inputs, prepared = _build_inputs(preview, workdir, timings)
            # the plan is made once, with everything the build will use
            plan = plan_for(profile, output, extra_paths, known, **inputs)
            yield _stage(plan, backend, workdir, out, prepared, timings, started, options)
    finally:
        release_workdir(workdir)
        shutil.rmtree(workdir, ignore_errors=True)


def _mirrors(profile, ref: str) -> dict:
    """The packages of a datastore image: from the profile's mirrors when
    the image is made from the profile's own distribution."""
    return mirrors_for(ref, profile.os.distro, profile.os.mirror,
                       profile.os.security_mirror)


def explain(profile, output=None, extra_paths=(), backend_name=None,
            options: Options = Options()) -> list[str]:
    """What a build would reuse and rebuild, and why; builds nothing. The
    datastore images count as the cache has them (not built yet: the base
    layer is rebuilt)."""
    known = elements.discover(extra_paths)
    preview = plan_for(profile, output, extra_paths, known)
    check_inputs(preview)
    backend = backends.get(backend_name or profile.backend)
    with tempfile.TemporaryDirectory(prefix="tib-explain-") as tmp:
        listed = []
        if preview.datastore_image:
            made = cached_datastore_image(preview.datastore_image,
                                          **_mirrors(profile, preview.datastore_image))
            if made is not None:
                listed.append(images.PreparedImage(made.ref, made.archive, made.image_id,
                                                   made.archive_sha256, made.size_bytes))
        for image in (profile.datastore.images if profile.datastore else ()):
            path = Path(image.archive).expanduser()
            if path.is_file():
                listed.append(images.PreparedImage(image.ref, path,
                                                   images.docker_archive_id(path), "", 0))
        inputs = {}
        if listed:
            inputs["images_list"] = images.write_list(listed, Path(tmp) / "images.list")
        plan = plan_for(profile, output, extra_paths, known, **inputs)
        layering, why_not = layering_for(plan, options, backend)
        if layering is None:
            return [f"layers: none ({why_not})"]
        outcomes, whole = layered.decide(plan, layering, LayerCache(), backend.name,
                                         options.refresh)
        return layered.explain_lines(layering, outcomes, whole)


def _build_inputs(preview: BuildPlan, workdir: Path, timings: dict) -> tuple[dict, list]:
    """What the plan needs from a started build: the Ubuntu archive keyring
    (checked against the pinned keys), the per-build ssh key (development
    images) and the prepared container images."""
    profile = preview.profile
    inputs: dict = {}
    prepared: list = []
    if profile.os.distro == "ubuntu":
        with log.step("the Ubuntu archive keyring (checked against the pinned keys)",
                      timings, "keyring"):
            inputs["apt_keyring"] = obtain_keyring(profile)
    if preview.dev_key is not None:
        with log.step("generate the per-build ssh key", timings, "ssh-key"):
            key = workdir / "id_ed25519"
            run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C",
                 f"trove-image-builder {profile.name} dev key", "-f", str(key)])
            inputs["dev_public_key"] = (workdir / "id_ed25519.pub").read_text().strip()
    if preview.datastore_image:
        with log.step(f"the datastore image {preview.datastore_image} (built here, "
                      "or from the cache)", timings, "datastore-image"):
            made = build_datastore_image(preview.datastore_image,
                                         **_mirrors(profile, preview.datastore_image))
            prepared.append(images.PreparedImage(
                made.ref, made.archive, made.image_id, made.archive_sha256,
                made.size_bytes, packages=made.packages))
    if profile.datastore is not None and profile.datastore.images:
        with log.step("prepare the preloaded container images", timings, "images"):
            prepared += images.prepare(profile.datastore.images, workdir, profile.source)
    if prepared:
        inputs["images_list"] = images.write_list(prepared, workdir / "container-images.list")
        for p in prepared:
            log.info(f"{p.ref}: {p.image_id} ({p.size_bytes} bytes)")
    return inputs, prepared


def layering_for(plan: BuildPlan, options: Options,
                 backend) -> tuple[layers.Layering | None, str]:
    """The plan's layers, or None and why it is built in one run."""
    if not options.layers:
        return None, "--no-layers: one backend run, nothing reused"
    if not backend.layered:
        return None, f"the {backend.name} backend builds in one run"
    why_not = layers.layerable(plan)
    if why_not:
        return None, why_not
    return layers.plan_layers(plan, backend=backend.name), ""


def _stage(plan: BuildPlan, backend, workdir: Path, out: Path, prepared: list,
           timings: dict, started: float, options: Options = Options()) -> Staged:
    profile = plan.profile
    side = sidecars(out)
    dev_public_key = plan.env.get("TROVE_DEV_SSH_PUBKEY") if plan.dev_key else None
    layering, why_not = layering_for(plan, options, backend)
    layer_report = None
    with log.step(f"build with {backend.name} ({len(plan.elements)} elements)",
                  timings, "backend"):
        if layering is None:
            log.info(f"layers: none ({why_not})")
            image = backend.build(plan, workdir, cache_dir(), side["log"], timings)
        else:
            image, outcomes, whole = layered.build(
                plan, layering, backend, workdir, LayerCache(), side["log"], timings,
                options.refresh)
            layer_report = {"layers": [o.to_dict() for o in outcomes],
                            "image": whole.to_dict(), "notes": list(layering.notes)}
    with log.step("read the image's contents", timings, "inspect"):
        contents = read_contents(image, plan, prepared)
        check_contents(contents, plan)
    with log.step("checksum", timings, "checksum"):
        digest = sha256_of(image)
    timings["total"] = round(time.monotonic() - started, 1)
    info = imagefs.image_info(image)
    contract = contract_for(plan, dev_public_key,
                            [(p.ref, p.image_id) for p in prepared] if prepared else None)
    manifest = {
        "schema": MANIFEST_SCHEMA,
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
        "elements_path": list(plan.elements_path),
        "tools": _tool_versions(),
        "host": {"partition_route": host.partition_route()},
        **contents,
        "contract": contract.to_dict(),
        "dev_ssh_key": str(plan.dev_key) if plan.dev_key else None,
        # which cached layers were reused (null: built in one backend run)
        "layers": layer_report,
        "timings": timings,
    }
    return Staged(plan, image, manifest, workdir, out)


def publish(st: Staged) -> tuple[Path, dict]:
    """Move a staged build into place: the side files first, the image
    last, so an image at the output path always comes with its own manifest
    and checksum."""
    side = sidecars(st.out)
    (st.workdir / "manifest.json").write_text(json.dumps(st.manifest, indent=2) + "\n")
    (st.workdir / "image.sha256").write_text(
        f"{st.manifest['image']['sha256']}  {st.out.name}\n")
    os.replace(st.workdir / "manifest.json", side["manifest"])
    os.replace(st.workdir / "image.sha256", side["sha256"])
    if st.plan.dev_key is not None:
        os.replace(st.workdir / "id_ed25519", st.plan.dev_key)
        os.replace(st.workdir / "id_ed25519.pub",
                   st.plan.dev_key.with_name(st.plan.dev_key.name + ".pub"))
    os.replace(st.image, st.out)
    return st.plan.output, st.manifest


def build(profile, output=None, extra_paths=(), backend_name=None,
          options: Options = Options()) -> tuple[Path, dict]:
    """Build the profile and publish it; return the image path and its
    manifest. Raises on failure, leaving nothing at the output path."""
    with staged(profile, output, extra_paths, backend_name, options) as st:
        return publish(st)
