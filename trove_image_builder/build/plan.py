"""From a validated Profile to a build plan: which elements, which
variables, which image. Backends execute a plan; they do not read profiles.
"""
from dataclasses import dataclass
from pathlib import Path

from .datastore_image import known
from ..elements import DatastoreInfo, Element, datastores, search_path
from ..errors import InputError
from ..profile import DISTROS, Profile

# Set at build time; shown this way by --dry-run.
DEV_KEY_PLACEHOLDER = "<per-build key, generated at build time>"
IMAGES_PLACEHOLDER = "<list of preloaded image archives, written at build time>"


@dataclass(frozen=True)
class BuildPlan:
    profile: Profile
    elements: tuple
    env: dict
    packages: tuple
    elements_path: tuple
    output: Path
    arch: str = "amd64"
    dev_key: Path | None = None
    # the datastore element's description (shipped or from --elements-path)
    datastore_info: DatastoreInfo | None = None
    # the container image the agent runs, when this build makes it
    # (datastore.image: built), e.g. mariadb:11.8
    datastore_image: str | None = None

    @property
    def size_gib(self) -> str:
        return self.profile.image.size.rstrip("G")


def default_output(profile: Profile) -> Path:
    return Path("out") / f"{profile.name}.{profile.image.format}"


def dev_key_path(output: Path) -> Path:
    return output.with_name(output.name.rsplit(".", 1)[0] + ".id_ed25519")


def _os_env(profile: Profile) -> dict:
    env = {"DIB_RELEASE": profile.release}
    if profile.os.mirror:
        env["DIB_DISTRIBUTION_MIRROR"] = profile.os.mirror
    if profile.os.security_mirror:
        env["DIB_DEBIAN_SECURITY_MIRROR"] = profile.os.security_mirror
    return env


def make_plan(profile: Profile, output: Path | None, known: dict[str, Element],
              extra_paths=(), ca_bundle: Path | None = None,
              dev_public_key: str | None = None, images_list: Path | None = None) -> BuildPlan:
    """Elements in the order DIB is given them, and their variables.

    What exists only once a build has started (the per-build ssh key, the
    list of prepared container images) is given here by the build; without
    it (--dry-run, a preview) the plan names it with a placeholder."""
    output = Path(output) if output else default_output(profile)
    distro = DISTROS[profile.os.distro]
    elements = [distro.element, "vm", "block-device-mbr", "trove-guest"]
    env = _os_env(profile)
    env["DIB_CLOUD_INIT_DATASOURCES"] = "ConfigDrive, OpenStack"
    env["TROVE_GUEST_USER"] = profile.guest_user

    ds = profile.datastore
    info = datastore_image = None
    if ds is not None:
        element = datastores(known)[ds.name]
        info = element.datastore
        if ds.runtime == "container":
            elements.append("container-engine")
        elements.append(element.name)
        env["TROVE_DATASTORE_RUNTIME"] = ds.runtime
        if ds.version:
            env["TROVE_DATASTORE_VERSION"] = ds.version
        if ds.image == "built":
            datastore_image = info.image_ref(ds.version)
        if ds.images or datastore_image:
            env["TROVE_CONTAINER_IMAGES_LIST"] = str(images_list) if images_list \
                else IMAGES_PLACEHOLDER

    ga = profile.guest_agent
    env["TROVE_GUEST_AGENT_INSTALL"] = ga.install
    if ga.install != "none":
        elements.append("guest-agent")
        if ga.install == "release":
            env["TROVE_GUEST_AGENT_VERSION"] = ga.version
        else:
            source = Path(ga.path).expanduser().resolve()
            env["TROVE_GUEST_AGENT_SOURCE"] = str(source)
        if ga.pip_index:
            env["TROVE_GUEST_AGENT_PIP_INDEX"] = ga.pip_index
        if ca_bundle:
            env["TROVE_BUILD_CA_BUNDLE"] = str(ca_bundle)

    if profile.cert_hook:
        elements.append("trove-certs")
        env["TROVE_CERTS_VOLUME"] = profile.certificates.volume
        hook = profile.user_hook_path()
        if hook is not None:
            env["TROVE_CERTS_USER_HOOK"] = str(hook)

    dev_key = None
    if profile.variant == "development":
        elements.append("dev-access")
        dev_key = dev_key_path(output)
        env["TROVE_DEV_SSH_PUBKEY"] = dev_public_key or DEV_KEY_PLACEHOLDER

    for name in profile.elements:
        if name not in elements:
            elements.append(name)
    env.update(profile.env)
    return BuildPlan(
        profile=profile, elements=tuple(elements), env=env,
        packages=profile.packages,
        elements_path=tuple(str(p) for p, origin in search_path(extra_paths)
                            if origin != "dib"),
        output=output, dev_key=dev_key, datastore_info=info, datastore_image=datastore_image)


def check_inputs(plan: BuildPlan) -> None:
    """What can only be checked when a build really starts."""
    source = plan.env.get("TROVE_GUEST_AGENT_SOURCE")
    if source and not (Path(source) / "setup.cfg").is_file():
        raise InputError(
            f"{plan.profile.source}: guest_agent.path: {source} is not a Trove "
            "checkout (no setup.cfg); give one with --set trove_source=PATH")
    hook = plan.env.get("TROVE_CERTS_USER_HOOK")
    if hook and not Path(hook).is_file():
        raise InputError(
            f"{plan.profile.source}: certificates.user_hook: {hook} is not a file; "
            "give the path of your script, relative to the profile")
    if plan.datastore_image:
        if plan.datastore_image not in known():
            raise InputError(
                f"{plan.profile.source}: datastore.image: built: no recipe here for "
                f"{plan.datastore_image} (the image Trove's agent runs for datastore "
                f"version {plan.profile.datastore.version}); buildable: "
                f"{', '.join(known())}; or set datastore.image: archive (with the archive "
                "in datastore.images) or pull")
    fmt = plan.profile.image.format
    if plan.output.suffix != f".{fmt}":
        raise InputError(f"-o {plan.output}: the image format is {fmt}; "
                         f"name the output *.{fmt}")
