"""From a validated Profile to a build plan: which elements, which
variables, which image. Backends execute a plan; they do not read profiles.
"""
from dataclasses import dataclass
from pathlib import Path
import shlex

from . import ubuntu_keyring
from .datastore_image import known
from ..elements import DatastoreInfo, Element, datastores, search_path
from ..errors import InputError
from ..profile import DISTROS, KERNELS, Profile

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


# An Ubuntu base: main and universe (docker.io and python3-venv are in
# universe), the updates and security pockets of the same mirror
# (ubuntu-minimal's root.d/75-ubuntu-minimal-baseinstall writes one
# "deb MIRROR RELEASE-POCKET COMPONENTS" line per pocket), and no
# /etc/network/interfaces.d: cloud-init configures the network through
# netplan (debootstrap's install.d/10-debian-networking writes ifupdown
# files unless told not to). A profile's env may override these.
UBUNTU_ENV = {
    "DIB_DEBIAN_COMPONENTS": "main,universe",
    "DIB_UBUNTU_MIRROR_DISTS": "updates,security",
    "DIB_APT_MINIMAL_CREATE_INTERFACES": "0",
}
# The bootstrap tools' options that hand over the keyring: DIB's
# debootstrap element (root.d/08-debootstrap) passes DIB_MMDEBSTRAP_EXTRA_ARGS
# to mmdebstrap (which it prefers when installed: the host's debootstrap has
# no noble script) and DIB_DEBOOTSTRAP_EXTRA_ARGS to debootstrap; both take
# --keyring=FILE and check the Release signatures against it. Not
# DIB_APT_KEYRING: ubuntu-minimal's root.d/75 pipes that file into the
# chroot's 'apt-key add', which needs gnupg, absent from a minbase chroot
# (and the chroot's apt needs no extra key: its own ubuntu-keyring package
# came through the checked bootstrap).
KEYRING_ARGS = ("DIB_MMDEBSTRAP_EXTRA_ARGS", "DIB_DEBOOTSTRAP_EXTRA_ARGS")
# Options that would switch the signature checks off.
UNCHECKED = ("--no-check-gpg", "trusted=yes", "AllowInsecureRepositories",
             "AllowUnauthenticated", "allow-insecure")


def ubuntu_keyring_path(profile: Profile, apt_keyring: Path | None = None) -> Path:
    """The keyring an Ubuntu build checks the archive with: the one a
    started build obtained (ubuntu_keyring.verified_keyring), else where
    that function keeps it. Refuses a release with no pinned keyring."""
    return Path(apt_keyring) if apt_keyring else ubuntu_keyring.cached_path(profile.release)


def _os_env(profile: Profile, apt_keyring: Path | None = None) -> dict:
    # The kernel the image boots (os.kernel): elements/guest-kernel puts it
    # in place of the OS element's own on Debian (debian-minimal always
    # installs linux-image-amd64); ubuntu-minimal installs DIB_UBUNTU_KERNEL.
    kernel = KERNELS[profile.os.kernel][profile.os.distro]
    env = {"DIB_RELEASE": profile.release, "TROVE_GUEST_KERNEL": kernel}
    if profile.os.mirror:
        env["DIB_DISTRIBUTION_MIRROR"] = profile.os.mirror
    if profile.os.distro == "ubuntu":
        env.update(UBUNTU_ENV)
        env["DIB_UBUNTU_KERNEL"] = kernel
        keyring = f"--keyring={shlex.quote(str(ubuntu_keyring_path(profile, apt_keyring)))}"
        env.update({name: keyring for name in KEYRING_ARGS})
    elif profile.os.security_mirror:
        env["DIB_DEBIAN_SECURITY_MIRROR"] = profile.os.security_mirror
    return env


def _keep_keyring(env: dict, os_env: dict, given: dict) -> None:
    """A profile's own bootstrap options go after the keyring, never
    instead of it."""
    for name in KEYRING_ARGS:
        if name in os_env and name in given and os_env[name] not in given[name]:
            env[name] = f"{os_env[name]} {given[name]}"


def make_plan(profile: Profile, output: Path | None, known: dict[str, Element],
              extra_paths=(), ca_bundle: Path | None = None,
              dev_public_key: str | None = None, images_list: Path | None = None,
              apt_keyring: Path | None = None) -> BuildPlan:
    """Elements in the order DIB is given them, and their variables.

    What exists only once a build has started (the per-build ssh key, the
    list of prepared container images) is given here by the build; without
    it (--dry-run, a preview) the plan names it with a placeholder. The
    Ubuntu keyring (apt_keyring, checked by the build) is named by the path
    it is kept at either way, so a preview's layer keys are the build's."""
    output = Path(output) if output else default_output(profile)
    distro = DISTROS[profile.os.distro]
    elements = [distro.element, "vm", "block-device-mbr", "trove-guest"]
    os_env = _os_env(profile, apt_keyring)
    env = dict(os_env)
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
            if profile.variant == "production":
                # only what the agent can load stays in its venv
                env["TROVE_GUEST_AGENT_PRUNE"] = "1"
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
    _keep_keyring(env, os_env, profile.env)
    return BuildPlan(
        profile=profile, elements=tuple(elements), env=env,
        packages=profile.packages,
        elements_path=tuple(str(p) for p, origin in search_path(extra_paths)
                            if origin != "dib"),
        output=output, dev_key=dev_key, datastore_info=info, datastore_image=datastore_image)


def check_inputs(plan: BuildPlan) -> None:
    """What can only be checked when a build really starts."""
    _check_os(plan)
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


def _check_os(plan: BuildPlan) -> None:
    """Signature checks stay on; an Ubuntu base has one mirror."""
    prof = plan.profile
    for name in ("DIB_DEBOOTSTRAP_EXTRA_ARGS", "DIB_MMDEBSTRAP_EXTRA_ARGS"):
        found = [opt for opt in UNCHECKED if opt in plan.env.get(name, "")]
        if found:
            raise InputError(f"{prof.source}: env: {name}: {found[0]} would switch off the "
                             "archive's signature checks; remove it")
    if prof.os.distro != "ubuntu":
        return
    ubuntu_keyring.keyring_version(prof.release)       # a pinned keyring, or InputError
    if prof.os.security_mirror and prof.os.security_mirror != prof.os.mirror:
        raise InputError(
            f"{prof.source}: os.security_mirror: Ubuntu's security pocket "
            f"({prof.release}-security) comes from os.mirror; leave security_mirror out "
            "(diskimage-builder's ubuntu-minimal takes every pocket from one mirror)")


def obtain_keyring(profile: Profile) -> Path | None:
    """For an Ubuntu base, the archive keyring the bootstrap checks
    signatures with, accepted only when it holds exactly the pinned Ubuntu
    archive keys (fetched from the profile's mirror once, then from the
    cache); a BuildError (one line) otherwise. None for other bases."""
    if profile.os.distro != "ubuntu":
        return None
    return ubuntu_keyring.verified_keyring(profile.os.mirror, profile.release)
