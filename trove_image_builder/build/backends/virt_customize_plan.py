"""What the virt-customize backend applies, decided on the host, by
diskimage-builder's own code wherever DIB has it:

- the element-deps closure: ``diskimage_builder.element_dependencies``
  (element-provides, the one operating-system element), on the ELEMENTS_PATH
  disk-image-create would see;
- the packages each phase installs and removes: the ``package-installs``
  element's ``package-installs-squash`` (``when:``, ``phase:``,
  ``uninstall:``, ``build-only:``, arch and installtype filters), run as DIB
  runs it, then the ``pkg-map`` element's ``pkg-map`` for the elements that
  ship a ``pkg-map`` file; packages go in and out at the points of the phase
  where the ``package-installs`` element's own scripts sit;
- the cached base image: a DIB plan of the OS and DIB's elements.

What stays here: the phases a guest cannot run, the environment.d
evaluation, and the order of the own elements (dependencies first).
"""
import dataclasses
import functools
import hashlib
from importlib.metadata import version
import json
import os
from pathlib import Path
import shlex
import subprocess
import sys
import tempfile

from diskimage_builder import element_dependencies as dib_deps

from ... import elements as elements_mod
from ...errors import BuildError, HostError, InputError
from ..plan import BuildPlan

# Phases run inside the guest, in DIB's order.
GUEST_PHASES = ("pre-install.d", "install.d", "post-install.d", "finalise.d")
HOST_PHASES = ("extra-data.d",)
# Phases that need DIB's own machinery (the build root, the block device).
REFUSED_PHASES = ("root.d", "post-root.d", "block-device.d", "pre-finalise.d", "cleanup.d")
# DIB elements that only shape the DIB build itself, or come with the base.
BASE_ONLY = ("vm", "block-device-mbr", "block-device-gpt", "block-device-efi")
_DIB_DEPS_ERRORS = (dib_deps.MissingElementException, dib_deps.AlreadyProvidedException,
                    dib_deps.MissingOSException, dib_deps.InvalidElementDir)


class PhaseRefused(InputError):
    """An element has a phase this backend cannot run."""


@dataclasses.dataclass(frozen=True)
class GuestWork:
    """What a build applies to the guest."""
    own: list           # own elements (shipped, --elements-path), dependencies first
    dib: list           # DIB's elements the plan and the own elements name: the base's
    env: dict           # the elements' environment (environment.d and the plan)
    actions: dict       # {phase: {"install": [...], "uninstall": [...]}}


def dib_elements_dir() -> Path:
    found = elements_mod.dib_elements_dir()
    if found is None:
        raise HostError("diskimage-builder's elements are missing: the virt-customize backend "
                        "builds its base image with diskimage-builder and reads its elements; "
                        "install diskimage-builder (scripts/install does)")
    return found


def prepare(plan: BuildPlan, known=None) -> GuestWork:
    known = known if known is not None else elements_mod.discover(plan.elements_path[1:])
    own, dib = resolve(plan.elements, plan.elements_path, known)
    refuse_unrunnable(own)
    env = element_env(own, plan.env)
    actions = package_actions(own, env, plan.elements_path, plan.arch,
                              os_element=known.get(plan.elements[0]))
    if plan.packages:
        installs = actions.setdefault("install.d", {"install": [], "uninstall": []})["install"]
        installs += [p for p in plan.packages if p not in installs]
    return GuestWork(own=own, dib=dib, env=env, actions=actions)


def resolve(plan_elements, elements_path, known) -> tuple[list, list]:
    """(own elements to apply, DIB elements for the base), from DIB's
    expansion of the element-deps on elements_path and DIB's own elements
    (as disk-image-create appends them). The own elements come dependencies
    first; DIB's elements are those the plan or an own element names (DIB
    expands the rest when it builds the base)."""
    path = ":".join([*map(str, elements_path), str(dib_elements_dir())])
    try:
        closure = {e.name: e for e in dib_deps._expand_element_dependencies(
            list(plan_elements), dib_deps._find_all_elements(path))}
    except _DIB_DEPS_ERRORS as exc:
        raise InputError("element-deps of the plan: " + (
            str(exc) or "an element the plan names is provided by another one")) from None
    own, dib, seen = [], [], set()

    def visit(name):
        if name in seen or name not in closure:     # not there: provided by another
            return
        seen.add(name)
        element = known[name]
        if element.origin == "dib":
            dib.append(element)
            return
        for dep in sorted(closure[name].depends):
            visit(dep)
        own.append(element)

    for name in plan_elements:
        visit(name)
    return own, dib


def refuse_unrunnable(own) -> None:
    for element in own:
        for phase in REFUSED_PHASES:
            folder = element.path / phase
            if folder.is_dir() and any(folder.iterdir()):
                raise PhaseRefused(
                    f"element {element.name}: phase {phase} cannot run on the virt-customize "
                    f"backend (it needs diskimage-builder's build root); use --backend dib")


def phase_scripts(own, phase: str) -> list[tuple[str, Path]]:
    """(script name, path) of a phase, across elements, in DIB's order."""
    scripts = []
    for element in own:
        folder = element.path / phase
        if folder.is_dir():
            for script in folder.iterdir():
                if script.is_file() and os.access(script, os.X_OK):
                    scripts.append((script.name, script))
    return sorted(scripts, key=lambda item: item[0])


def element_env(own, plan_env: dict) -> dict:
    """The variables the elements' environment.d files set, evaluated on the
    host with the plan's variables (as DIB sources them)."""
    out = _sourced(own, plan_env)
    return {k: v for k, v in out.items()
            if k.startswith(("TROVE_", "DIB_")) or k in plan_env}


def _sourced(elements, plan_env: dict, strict: bool = True) -> dict:
    """The environment after sourcing the elements' environment.d files, in
    name order across elements. Not strict: each file is read leniently
    (one that needs a variable only a build has is passed over)."""
    files = []
    for element in elements:
        folder = Path(element.path) / "environment.d"
        if folder.is_dir():
            files += sorted(folder.iterdir(), key=lambda p: p.name)
    files.sort(key=lambda p: p.name)
    if strict:
        script = "set -eu\n" + "".join(f"source {shlex.quote(str(f))}\n" for f in files)
    else:
        script = "".join(f"source {shlex.quote(str(f))} >/dev/null 2>&1\n" for f in files)
    script += "env -0\n"
    proc = subprocess.run(["bash", "-c", script], env={**_clean_env(), **plan_env},
                          capture_output=True)
    if proc.returncode != 0:
        raise BuildError("environment.d failed: " + proc.stderr.decode(errors="replace")[-500:])
    out = {}
    for item in proc.stdout.split(b"\0"):
        key, sep, value = item.decode(errors="replace").partition("=")
        if sep:
            out[key] = value
    return out


def _clean_env() -> dict:
    keep = ("PATH", "HOME", "LANG", "TMPDIR")
    return {k: v for k, v in os.environ.items() if k in keep}


@functools.cache
def package_steps() -> dict:
    """{phase: (install step, removal step)}: the names of the package-installs
    element's scripts in each phase (DIB installs packages in no other)."""
    folder = dib_elements_dir() / "package-installs"
    steps = {}
    for phase in GUEST_PHASES:
        names = sorted(p.name for p in (folder / phase).glob("*"))
        installs = [n for n in names if "package-installs" in n]
        removals = [n for n in names if "package-uninstalls" in n]
        if installs and removals:
            steps[phase] = (installs[0], removals[0])
    return steps


def package_actions(own, env: dict, elements_path=None, arch: str = "amd64",
                    os_element=None) -> dict:
    """{phase: {"install": [...], "uninstall": [...]}} for the own elements'
    package-installs files, as DIB decides it: its package-installs-squash
    run with env (and ARCH), then pkg-map for the elements with a pkg-map.
    A build-only package is installed and removed in its phase, as in DIB."""
    if not any((e.path / f"package-installs.{ext}").is_file()
               for e in own for ext in ("yaml", "json")):
        return {}
    if elements_path is None:
        elements_path = list(dict.fromkeys(str(e.path.parent) for e in own))
    squash = dib_elements_dir() / "package-installs" / "bin" / "package-installs-squash"
    # 'when:' may name the OS (DISTRO_NAME, DIB_RELEASE), which only the OS
    # element's environment.d sets
    when_env = {**_os_vars(env, os_element), **env}
    with tempfile.TemporaryDirectory(prefix="tib-package-installs-") as tmp:
        out = Path(tmp) / "package-installs.json"
        proc = subprocess.run(
            [sys.executable, str(squash), "--elements", " ".join(e.name for e in own),
             "--path", ":".join(map(str, elements_path)), str(out)],
            env={**_clean_env(), **when_env, "ARCH": arch}, capture_output=True, text=True)
        if proc.returncode != 0:
            raise InputError("package-installs: diskimage-builder's package-installs-squash "
                             f"refused the elements' package-installs files: {_why(proc)}")
        squashed = json.loads(out.read_text())
    maps = {e.name: e.path / "pkg-map" for e in own if (e.path / "pkg-map").is_file()}
    distro = _distro(env, os_element) if maps else {}
    actions = {}
    for phase, lists in squashed.items():
        for kind in ("install", "uninstall"):
            by_element: dict = {}
            for package, element in lists.get(kind, []):
                by_element.setdefault(element, []).append(package)
            for element, packages in by_element.items():
                if phase not in package_steps():
                    raise PhaseRefused(
                        f"element {element}: package-installs phase {phase}: diskimage-builder "
                        f"installs packages only in {', '.join(package_steps())}")
                if element in maps:
                    packages = _pkg_map(maps[element], packages, distro)
                act = actions.setdefault(phase, {"install": [], "uninstall": []})
                act[kind] += [p for p in packages if p not in act[kind]]
    return actions


def _why(proc) -> str:
    """DIB's scripts print their refusal on stdout, or die with a traceback."""
    lines = proc.stdout.strip().splitlines()
    if "Traceback" in proc.stderr or not lines:
        lines = proc.stderr.strip().splitlines()
    return lines[-1] if lines else f"exit code {proc.returncode}"


def _os_vars(env: dict, os_element) -> dict:
    """DISTRO_NAME and DIB_RELEASE, as the OS element sets them (none
    without it)."""
    names = ("DISTRO_NAME", "DIB_RELEASE")
    if "DISTRO_NAME" not in env and os_element is not None:
        # the OS element with what it depends on (ubuntu-minimal has its
        # DISTRO_NAME from ubuntu-common), read leniently: other elements'
        # environment.d may need variables only a build has
        try:
            found = dib_deps.get_elements([os_element.name], str(os_element.path.parent))
        except Exception:  # noqa: BLE001 - DIB raises plain Exceptions
            found = [(os_element.name, os_element.path)]
        chain = [dataclasses.replace(os_element, path=Path(path)) for _name, path in found]
        env = _sourced(chain, env, strict=False)
    return {k: env[k] for k in names if k in env}


def _distro(env: dict, os_element) -> dict:
    """DISTRO_NAME and DIB_RELEASE for pkg-map."""
    distro = _os_vars(env, os_element)
    if "DISTRO_NAME" not in distro:
        raise InputError("pkg-map: no DISTRO_NAME (the operating-system element sets it)")
    return distro


def _pkg_map(map_file: Path, packages: list, distro: dict) -> list:
    """packages-installs-v2's pkg-map call, on the host."""
    tool = dib_elements_dir() / "pkg-map" / "bin" / "pkg-map"
    argv = [sys.executable, str(tool), "--pkg-map", str(map_file), "--missing-ok",
            "--prefix", "-", "--distro", distro["DISTRO_NAME"]]
    if "DIB_RELEASE" in distro:
        argv += ["--release", distro["DIB_RELEASE"]]
    proc = subprocess.run(argv + list(packages), env=_clean_env(), capture_output=True,
                          text=True)
    if proc.returncode != 0:
        raise InputError(f"pkg-map {map_file}: {_why(proc)}")
    return [ln[1:] for ln in proc.stdout.splitlines() if ln.startswith("-")]


KERNEL_ELEMENT, KERNEL_ENV = "guest-kernel", "TROVE_GUEST_KERNEL"


def base_plan(plan: BuildPlan, dib_elements) -> tuple[BuildPlan, str]:
    """The OS base as a DIB plan, and the cache key of what makes it."""
    names = [plan.elements[0], "vm", "block-device-mbr"] + \
        [e.name for e in dib_elements if e.name not in BASE_ONLY and e.name != plan.elements[0]]
    env = {k: v for k, v in plan.env.items() if k.startswith("DIB_")}
    if plan.env.get(KERNEL_ENV):
        # the profile's kernel, in place before DIB's bootloader sets up the
        # boot (the appliance cannot redo that: elements/guest-kernel)
        names.append(KERNEL_ELEMENT)
        env[KERNEL_ENV] = plan.env[KERNEL_ENV]
    prof = plan.profile
    key = hashlib.sha256(json.dumps({
        "elements": names, "env": env, "size": prof.image.size, "arch": plan.arch,
        "dib": version("diskimage-builder")}, sort_keys=True).encode()).hexdigest()[:16]
    # the cached base is always a qcow2 (the overlay's backing file)
    prof = dataclasses.replace(prof, image=dataclasses.replace(prof.image, format="qcow2"))
    base = BuildPlan(profile=prof, elements=tuple(names), env=env, packages=(),
                     elements_path=plan.elements_path, output=plan.output, arch=plan.arch)
    return base, key
