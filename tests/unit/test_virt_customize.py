"""The virt-customize backend, fast: libguestfs replaced at the seam by an
in-memory FakeGuestFS (in the spirit of nova's fakeguestfs), the shipped
elements read for real, diskimage-builder's element-deps expansion and
package-installs-squash run for real, extra-data.d run on the host as a
build does."""
import dataclasses
import os
from pathlib import Path
import posixpath
import re
import subprocess
import sys
import tarfile
import textwrap
import types

from click.testing import CliRunner
import pytest

from trove_image_builder.build import stage as build_mod
from trove_image_builder import elements, profile as profiles, shipped_dir
from trove_image_builder.plumbing import host
from trove_image_builder.build.backends import (
    virt_customize as vc, virt_customize_guest as guest, virt_customize_plan as vcp)
from trove_image_builder.build.backends.dib import DibBackend
from trove_image_builder.build.backends.virt_customize import VirtCustomizeBackend
from trove_image_builder.build.backends.virt_customize_guest import IN_TARGET
from trove_image_builder.build.backends.virt_customize_plan import (
    PhaseRefused, base_plan, element_env, package_actions, package_steps, phase_scripts,
    refuse_unrunnable, resolve)
from trove_image_builder.cli import main
from trove_image_builder.errors import BuildError, HostError, InputError

SHIPPED = ("guest-kernel", "trove-guest", "guest-agent", "container-engine", "mariadb",
           "postgresql", "dev-access")
BUILD_RESOLV = b"nameserver 10.0.2.3\nnameserver 169.254.2.3\n"
STUB_RESOLV = "../run/systemd/resolve/stub-resolv.conf"


class FakeGuestFS:
    """A libguestfs handle in memory: records every call, keeps the guest's
    files (written with write() or unpacked by tar_in()), answers inspection
    with one root mounted at /, and records each sh() script with what
    /etc/resolv.conf held while it ran.

    sh() fails with RuntimeError when its script contains ``fail_on``, after
    leaving ``guest_log`` in /tmp/tib-step.log as the guest's shell would.
    """

    ROOT = "/dev/sda1"

    def __init__(self, fail_on=None, guest_log="", launch_error=None):
        self.calls = []                 # (method, args, kwargs)
        self.files = {}                 # guest path -> bytes
        self.symlinks = {"/etc/resolv.conf": STUB_RESOLV}
        self.dirs = {"/", "/etc", "/tmp", "/usr", "/var"}
        self.modes = {}                 # guest path -> mode (tar_in, chmod)
        self.tars = []                  # (directory, [TarInfo])
        self.scripts = []               # sh() scripts, in order
        self.resolv_during = []         # /etc/resolv.conf during each sh()
        self.fail_on = fail_on
        self.guest_log = guest_log
        self.launch_error = launch_error
        self.launched = False
        self.closed = False

    def _call(self, name, *args, **kwargs):
        self.calls.append((name, args, kwargs))

    def _need(self, path):
        if not path.startswith("/"):
            raise RuntimeError(f"{path}: path must start with a / character")

    # -- the appliance
    def set_network(self, enabled):
        self._call("set_network", enabled)

    def set_memsize(self, mb):
        self._call("set_memsize", mb)

    def set_smp(self, vcpus):
        self._call("set_smp", vcpus)

    def add_drive_opts(self, filename, **opts):
        self._call("add_drive_opts", filename, **opts)

    def launch(self):
        self._call("launch")
        if self.launch_error:
            raise RuntimeError(self.launch_error)
        self.launched = True

    def fstrim(self, mountpoint):
        self._call("fstrim", mountpoint)

    def sync(self):
        self._call("sync")

    def umount_all(self):
        self._call("umount_all")

    def shutdown(self):
        self._call("shutdown")

    def close(self):
        self._call("close")
        self.closed = True

    # -- inspection and mounts
    def inspect_os(self):
        self._call("inspect_os")
        return [self.ROOT]

    def inspect_get_mountpoints(self, root):
        self._call("inspect_get_mountpoints", root)
        assert root == self.ROOT
        return {"/": self.ROOT}

    def mount(self, mountable, mountpoint):
        self._call("mount", mountable, mountpoint)

    # -- files (is_file does not follow symlinks; exists does)
    def is_file(self, path):
        self._call("is_file", path)
        return path in self.files

    def is_symlink(self, path):
        self._call("is_symlink", path)
        return path in self.symlinks

    def exists(self, path):
        self._call("exists", path)
        return path in self.files or path in self.dirs

    def rename(self, src, dest):
        self._call("rename", src, dest)
        for store in (self.files, self.symlinks):
            if src in store:
                store[dest] = store.pop(src)
                return
        raise RuntimeError(f"rename: {src}: No such file or directory")

    def write(self, path, content):
        self._call("write", path, content)
        self._need(path)
        if posixpath.dirname(path) not in self.dirs:
            raise RuntimeError(f"write: {path}: No such file or directory")
        self.symlinks.pop(path, None)
        self.files[path] = content.encode() if isinstance(content, str) else bytes(content)

    def cat(self, path):
        self._call("cat", path)
        if path not in self.files:
            raise RuntimeError(f"cat: {path}: No such file or directory")
        return self.files[path].decode()

    def rm_f(self, path):
        self._call("rm_f", path)
        self.files.pop(path, None)
        self.symlinks.pop(path, None)

    def mkdir_p(self, path):
        self._call("mkdir_p", path)
        while path not in ("/", ""):
            self.dirs.add(path)
            path = posixpath.dirname(path)

    def chmod(self, mode, path):
        self._call("chmod", mode, path)
        if path not in self.files and path not in self.dirs:
            raise RuntimeError(f"chmod: {path}: No such file or directory")
        self.modes[path] = mode

    def tar_in(self, tarpath, directory):
        self._call("tar_in", tarpath, directory)
        if directory not in self.dirs:
            raise RuntimeError(f"tar_in: {directory}: No such file or directory")
        with tarfile.open(tarpath) as tar:
            members = tar.getmembers()
            self.tars.append((directory, members))
            for m in members:
                dest = posixpath.normpath(posixpath.join(directory, m.name))
                if m.isdir():
                    self.dirs.add(dest)
                elif m.issym():
                    self.symlinks[dest] = m.linkname
                else:
                    self.files[dest] = tar.extractfile(m).read()
                self.modes[dest] = m.mode

    def sh(self, script):
        self._call("sh", script)
        self.scripts.append(script)
        self.resolv_during.append(self.files.get("/etc/resolv.conf"))
        if self.fail_on is not None and self.fail_on in script:
            self.files["/tmp/tib-step.log"] = self.guest_log.encode()
            raise RuntimeError("sh: command exited with status 100")
        out = f"[guest] step {len(self.scripts)} done\n"
        self.files["/tmp/tib-step.log"] = out.encode()
        return out

    # -- for the tests
    def names(self):
        return [name for name, _args, _kwargs in self.calls]

    def steps(self):
        """What each sh() ran: a phase name, 'purge' or 'generalise'."""
        out = []
        for script in self.scripts:
            m = re.search(rf"bash {IN_TARGET}/run-(\S+?\.d)\b", script)
            if m:
                out.append(m.group(1))
            elif ": > /etc/machine-id" in script:
                out.append("generalise")
            elif "apt-get -y -q purge" in script:
                out.append("purge")
            else:
                out.append(script)
        return out

    def guest_script(self, phase):
        return self.files[f"{IN_TARGET}/run-{phase}"].decode()


@pytest.fixture
def plan_of(known, monkeypatch):
    """plan_of(name, sets) -> the BuildPlan the CLI makes, without the build
    host's CA bundle (unless a test sets TROVE_IMAGE_BUILDER_CA_BUNDLE).
    A container datastore is pulled at prepare (datastore.image: pull) unless
    a test sets another source: a plan with preloaded images names their list
    with a placeholder that only a started build replaces."""
    for var in ("TROVE_IMAGE_BUILDER_CA_BUNDLE", "PIP_CERT", "REQUESTS_CA_BUNDLE"):
        monkeypatch.delenv(var, raising=False)

    def _plan(name="prod-mariadb", sets=()):
        prof = profiles.load(name, sets, known_elements=known)
        if prof.datastore and prof.datastore.runtime == "container" and \
                not any(s.startswith("datastore.image=") for s in sets):
            prof = profiles.load(name, [*sets, "datastore.image=pull"], known_elements=known)
        return build_mod.plan_for(prof)
    return _plan


@pytest.fixture
def user_elements(tmp_path):
    """make(name, {relative path: text}, plain=()) -> Element from a user
    folder (tmp_path/elements); files in a phase folder are made executable
    unless listed in plain."""
    root = tmp_path / "elements"
    root.mkdir()

    def _make(name, files=None, plain=()):
        folder = root / name
        folder.mkdir()
        for rel, text in (files or {}).items():
            path = folder / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(textwrap.dedent(text).lstrip("\n"))
            phase = rel.split("/")[0]
            if phase.endswith(".d") and phase != "environment.d" and rel not in plain:
                path.chmod(0o755)
        element = elements.discover([root])[name]
        assert element.origin == "user", f"{name} is shadowed by a {element.origin} element"
        return element
    _make.root = root
    return _make


@pytest.fixture
def own_of(known, plan_of):
    """own_of(name, sets) -> (plan, own elements, their environment)."""
    def _own(name="prod-mariadb", sets=()):
        plan = plan_of(name, sets)
        own, _dib = resolve(plan.elements, plan.elements_path, known)
        return plan, own, element_env(own, plan.env)
    return _own


def names(found):
    return [e.name for e in found]


def user_path(user_elements):
    """The elements path of a plan with --elements-path (the user folder)."""
    return (shipped_dir("elements"), user_elements.root)


SCRIPT = "#!/bin/bash\nset -eu\necho {}\n"


# --------------------------------------------------------------------------
# resolve(): diskimage-builder's element-deps expansion; own elements (deps
# first) to apply, the DIB elements they name for the base

def test_resolve_prod_mariadb(plan_of, known):
    plan = plan_of("prod-mariadb")
    own, dib = resolve(plan.elements, plan.elements_path, known)
    assert names(own) == ["guest-kernel", "trove-guest", "container-engine", "mariadb",
                          "guest-agent", "trove-certs"]
    assert {e.origin for e in own} == {"shipped"}
    assert set(names(dib)) == {"debian-minimal", "vm", "block-device-mbr", "openssh-server",
                               "package-installs", "sysprep", "install-static"}
    assert names(dib)[:3] == ["debian-minimal", "vm", "block-device-mbr"]
    assert {e.origin for e in dib} == {"dib"}
    assert len(set(names(dib))) == len(dib)
    assert not set(names(dib)) & set(SHIPPED)


def test_resolve_is_diskimage_builders_expansion(plan_of, known, monkeypatch):
    # the closure comes from DIB, on the ELEMENTS_PATH disk-image-create sees
    plan = plan_of("prod-mariadb")
    seen = {}
    real_find, real_expand = (vcp.dib_deps._find_all_elements,
                              vcp.dib_deps._expand_element_dependencies)

    def find(path):
        seen["path"] = path
        return real_find(path)

    def expand(user_elements, all_elements):
        seen["asked"] = list(user_elements)
        seen["closure"] = {e.name for e in real_expand(user_elements, all_elements)}
        return real_expand(user_elements, all_elements)
    monkeypatch.setattr(vcp.dib_deps, "_find_all_elements", find)
    monkeypatch.setattr(vcp.dib_deps, "_expand_element_dependencies", expand)
    own, dib = resolve(plan.elements, plan.elements_path, known)
    assert seen["path"].split(":") == [*plan.elements_path, str(elements.dib_elements_dir())]
    assert seen["asked"] == list(plan.elements)
    # DIB's closure goes on through DIB's own elements; the base gets those
    # the plan and the own elements name, and DIB expands the rest
    assert {"debootstrap", "dpkg", "install-bin", "pkg-map"} <= seen["closure"]
    assert set(names(own)) | set(names(dib)) < seen["closure"]


def test_resolve_puts_dependencies_first(known, user_elements):
    user_elements("tib-parent", {"element-deps": "trove-guest\n"})
    user_elements("tib-child", {"element-deps": "tib-parent\nsysprep\n"})
    found = elements.discover([user_elements.root])
    own, dib = resolve(("debian-minimal", "tib-child"), user_path(user_elements), found)
    assert names(own) == ["guest-kernel", "trove-guest", "tib-parent", "tib-child"]
    assert [e.origin for e in own] == ["shipped", "shipped", "user", "user"]
    # an element's dependencies in name order: sysprep before tib-parent
    assert names(dib) == ["debian-minimal", "sysprep", "package-installs", "openssh-server"]


def test_resolve_survives_a_dependency_cycle(user_elements):
    user_elements("tib-a", {"element-deps": "tib-b\n"})
    user_elements("tib-b", {"element-deps": "tib-a\n"})
    own, dib = resolve(("debian-minimal", "tib-a"), user_path(user_elements),
                       elements.discover([user_elements.root]))
    assert names(own) == ["tib-b", "tib-a"]
    assert names(dib) == ["debian-minimal"]


def test_resolve_honours_element_provides(user_elements):
    user_elements("tib-impl", {"element-provides": "tib-virtual\n"})
    user_elements("tib-user", {"element-deps": "tib-virtual\n"})
    found = elements.discover([user_elements.root])
    own, _dib = resolve(("debian-minimal", "tib-impl", "tib-user"), user_path(user_elements),
                        found)
    assert names(own) == ["tib-impl", "tib-user"]
    with pytest.raises(InputError, match="Element 'tib-virtual' not found"):
        resolve(("debian-minimal", "tib-user"), user_path(user_elements), found)


def test_resolve_two_providers(user_elements):
    user_elements("tib-one", {"element-provides": "tib-virtual\n"})
    user_elements("tib-two", {"element-provides": "tib-virtual\n"})
    with pytest.raises(InputError) as err:
        resolve(("debian-minimal", "tib-one", "tib-two"), user_path(user_elements),
                elements.discover([user_elements.root]))
    assert err.value.message.startswith("element-deps of the plan: tib-virtual: already "
                                        "provided by ")


def test_resolve_needs_an_operating_system(user_elements):
    user_elements("tib-alone", {"element-deps": "trove-guest\n"})
    with pytest.raises(InputError) as err:
        resolve(("tib-alone",), user_path(user_elements),
                elements.discover([user_elements.root]))
    assert err.value.message == (
        "element-deps of the plan: Please include an operating system element")


def test_resolve_unknown_element(known, plan_of):
    with pytest.raises(InputError) as err:
        resolve(("debian-minimal", "nosuch"), plan_of().elements_path, known)
    assert err.value.message == "element-deps of the plan: Element 'nosuch' not found"
    assert err.value.exit_code == 2


def test_resolve_unknown_element_dependency(user_elements):
    user_elements("tib-needy", {"element-deps": "trove-guest\nghost\n"})
    with pytest.raises(InputError, match="Element 'ghost' not found"):
        resolve(("debian-minimal", "tib-needy"), user_path(user_elements),
                elements.discover([user_elements.root]))


def test_resolve_comments_in_element_deps_fail_as_in_dib(user_elements):
    # DIB reads every line of element-deps as an element name
    user_elements("tib-commented", {"element-deps": "# needs the guest\ntrove-guest\n"})
    with pytest.raises(InputError, match="Element '# needs the guest' not found"):
        resolve(("debian-minimal", "tib-commented"), user_path(user_elements),
                elements.discover([user_elements.root]))


# --------------------------------------------------------------------------
# refuse_unrunnable(): phases that need DIB's build root

@pytest.mark.parametrize("phase", vcp.REFUSED_PHASES)
def test_refused_phase_names_the_element_and_the_phase(user_elements, phase):
    element = user_elements("tib-needs-dib", {f"{phase}/10-do": SCRIPT.format(phase)})
    with pytest.raises(PhaseRefused) as err:
        refuse_unrunnable([element])
    assert err.value.message == (
        f"element tib-needs-dib: phase {phase} cannot run on the virt-customize backend "
        "(it needs diskimage-builder's build root); use --backend dib")
    assert isinstance(err.value, InputError) and err.value.exit_code == 2


def test_refused_after_runnable_elements(known, user_elements):
    blocky = user_elements("tib-blocky", {"block-device.d/10-parts": SCRIPT.format("x")})
    with pytest.raises(PhaseRefused, match="^element tib-blocky: phase block-device.d "):
        refuse_unrunnable([known["trove-guest"], known["guest-agent"], blocky])


def test_empty_refused_phase_folder_is_fine(user_elements):
    element = user_elements("tib-empty-root", {"install.d/10-x": SCRIPT.format("x")})
    (element.path / "root.d").mkdir()
    assert refuse_unrunnable([element]) is None


@pytest.mark.parametrize("profile", ["prod-mariadb", "prod-postgresql", "mariadb-package"])
def test_shipped_elements_are_all_runnable(own_of, profile):
    _plan, own, _env = own_of(profile)
    assert refuse_unrunnable(own) is None


def test_post_root_phase_is_refused(user_elements):
    element = user_elements("tib-post-root", {"post-root.d/10-x": SCRIPT.format("x")})
    try:
        refuse_unrunnable([element])
    except PhaseRefused as exc:
        assert "phase post-root.d" in exc.message
    else:
        raise AssertionError("post-root.d was not refused")


def dry_run(*args):
    return CliRunner().invoke(main, ["build", *args, "--backend", "virt-customize",
                                     "--dry-run"])


@pytest.fixture
def cli_profile(write, tmp_path, monkeypatch):
    """cli_profile(elements) -> a profile file naming those extra elements."""
    monkeypatch.setenv("TROVE_IMAGE_BUILDER_CACHE", str(tmp_path / "cache"))

    def _profile(extra):
        return write("p.yaml", f"""
            extends: base-debian
            name: p
            elements: [{', '.join(extra)}]
            """)
    return _profile


@pytest.mark.parametrize("phase", ["root.d", "block-device.d"])
def test_cli_dry_run_refuses_a_phase_it_cannot_run(user_elements, cli_profile, phase):
    user_elements("tib-rooty", {"element-deps": "trove-guest\n",
                                f"{phase}/10-x": SCRIPT.format("x")})
    prof = cli_profile(["tib-rooty"])
    result = dry_run(str(prof), "--elements-path", str(user_elements.root))
    assert result.exit_code == 2, (result.output, result.exception)
    assert result.stderr == (
        f"Error: element tib-rooty: phase {phase} cannot run on the virt-customize "
        "backend (it needs diskimage-builder's build root); use --backend dib\n")
    assert result.stdout == ""
    assert "Traceback" not in result.output


def test_cli_dry_run_lists_elements_and_phase_scripts(user_elements, cli_profile):
    user_elements("tib-extra", {"element-deps": "trove-guest\n",
                                "install.d/55-extra": SCRIPT.format("x"),
                                "package-installs.yaml": "extra-dev:\n  build-only: true\n"})
    prof = cli_profile(["tib-extra"])
    result = dry_run(str(prof), "--elements-path", str(user_elements.root))
    assert result.exit_code == 0, (result.output, result.exception)
    out = result.stdout.splitlines()
    env = [ln for ln in out if ln.startswith("environment: ")]
    assert "environment: TROVE_GUEST_USER=trove" in env
    assert "environment: DIB_CLOUD_INIT_DATASOURCES='ConfigDrive, OpenStack'" in env
    said = dict(ln.split(": ", 1) for ln in out if ln not in env)
    install, remove = package_steps()["install.d"]
    assert list(said) == [
        "base image (built once with DIB, cached)", "base image elements", "elements",
        "extra-data.d (on the host)", "pre-install.d (in the guest)",
        "install.d (in the guest)", f"install.d installs (at {install})",
        f"install.d removes (at {remove})", "post-install.d (in the guest)",
        "finalise.d (in the guest)", "then"]
    cache = Path(os.environ["TROVE_IMAGE_BUILDER_CACHE"])
    base = Path(said["base image (built once with DIB, cached)"])
    assert base.parent == cache / "base" and re.fullmatch(r"[0-9a-f]{16}\.qcow2", base.name)
    assert said["base image elements"].split()[:3] == ["debian-minimal", "vm",
                                                       "block-device-mbr"]
    assert said["elements"] == "guest-kernel trove-guest tib-extra"
    assert said["extra-data.d (on the host)"] == "-"
    assert said["pre-install.d (in the guest)"] == "05-trove-guest-dpkg-excludes"
    assert said["install.d (in the guest)"] == "50-trove-guest-user 55-extra 80-guest-kernel"
    assert {"cloud-init", "sudo", "extra-dev"} <= set(
        said[f"install.d installs (at {install})"].split())
    assert said[f"install.d removes (at {remove})"] == "extra-dev"
    assert said["finalise.d (in the guest)"] == "85-trove-guest-slim 90-trove-guest-generalise"
    assert said["then"] == "generalise, flatten into qcow2 (compression zstd)"
    # a dry run builds nothing and makes no folders
    assert not cache.exists()


# --------------------------------------------------------------------------
# phase_scripts(): one phase across elements, in DIB's order

def test_phase_scripts_sorted_across_elements(user_elements):
    a = user_elements("tib-alpha", {"install.d/20-a": SCRIPT.format("a"),
                                    "install.d/40-a": SCRIPT.format("a"),
                                    "install.d/50-notes": "not a script\n",
                                    "post-install.d/10-a": SCRIPT.format("a")},
                      plain=("install.d/50-notes",))
    (a.path / "install.d" / "60-folder").mkdir()
    b = user_elements("tib-beta", {"install.d/10-b": SCRIPT.format("b"),
                                   "install.d/30-b": SCRIPT.format("b")})
    c = user_elements("tib-gamma", {"README.rst": "no phases\n"})
    found = phase_scripts([a, b, c], "install.d")
    assert found == [("10-b", b.path / "install.d/10-b"), ("20-a", a.path / "install.d/20-a"),
                     ("30-b", b.path / "install.d/30-b"), ("40-a", a.path / "install.d/40-a")]
    assert phase_scripts([a, b, c], "post-install.d") == [
        ("10-a", a.path / "post-install.d/10-a")]
    assert phase_scripts([a, b, c], "finalise.d") == []


def test_phase_scripts_of_the_shipped_elements(own_of):
    _plan, own, _env = own_of("prod-mariadb")
    assert [n for n, _ in phase_scripts(own, "install.d")] == [
        "50-trove-guest-user", "60-guest-agent", "65-container-engine-access",
        "66-container-images", "70-mariadb", "70-trove-certs", "80-guest-kernel"]
    assert [n for n, _ in phase_scripts(own, "extra-data.d")] == [
        "50-guest-agent-inputs", "50-trove-certs-user-hook", "60-container-images"]


# --------------------------------------------------------------------------
# package_actions(): package-installs.yaml as diskimage-builder squashes it

@pytest.mark.parametrize("install, expected", [
    ("release", {"install.d": {"install": ["python3-venv"], "uninstall": []}}),
    ("source", {"install.d": {"install": ["python3-venv", "git"], "uninstall": []}}),
    ("none", {}),
])
def test_guest_agent_packages(known, install, expected):
    agent = [known["guest-agent"]]
    env = element_env(agent, {"TROVE_GUEST_AGENT_INSTALL": install})
    assert package_actions(agent, env) == expected


def test_guest_agent_packages_default_to_release(known):
    agent = [known["guest-agent"]]
    assert package_actions(agent, element_env(agent, {}))["install.d"]["install"] == [
        "python3-venv"]


PACKAGES = """
    always:
    early:
      phase: pre-install.d
    gone:
      uninstall: true
    helper-dev:
      build-only: true
    late-dev:
      phase: post-install.d
      build-only: true
    only-a:
      when: TROVE_FLAVOUR = a
    not-a:
      when: TROVE_FLAVOUR != a
    tight-a:
      when: TROVE_FLAVOUR=a
    both-a-and-x:
      when:
        - TROVE_FLAVOUR = a
        - TROVE_EXTRA = x
    arm-only:
      arch: arm64
    not-on-arm:
      not-arch: arm64,ppc64le
    """


@pytest.mark.parametrize("flavour, conditional", [
    ("a", ["only-a", "tight-a", "both-a-and-x"]),
    ("b", ["not-a"]),
])
def test_package_actions(user_elements, flavour, conditional):
    element = user_elements("tib-pkgs", {"package-installs.yaml": PACKAGES})
    assert package_actions([element], {"TROVE_FLAVOUR": flavour, "TROVE_EXTRA": "x"}) == {
        # a build-only package goes in at the start of its phase, out at its end
        "install.d": {"install": ["always", "helper-dev"] + conditional + ["not-on-arm"],
                      "uninstall": ["gone", "helper-dev"]},
        "pre-install.d": {"install": ["early"], "uninstall": []},
        "post-install.d": {"install": ["late-dev"], "uninstall": ["late-dev"]},
    }


def test_package_actions_arch(user_elements):
    element = user_elements("tib-pkgs", {"package-installs.yaml": PACKAGES})
    actions = package_actions([element], {"TROVE_FLAVOUR": "b", "TROVE_EXTRA": "y"},
                              arch="arm64")
    assert actions["install.d"]["install"] == ["always", "helper-dev", "not-a", "arm-only"]


def test_package_actions_see_the_elements_environment_not_the_hosts(user_elements,
                                                                    monkeypatch):
    element = user_elements("tib-pkgs", {"package-installs.yaml": PACKAGES})
    monkeypatch.setenv("TROVE_FLAVOUR", "a")
    env = {"TROVE_FLAVOUR": "b", "TROVE_EXTRA": "x"}
    assert "only-a" not in package_actions([element], env)["install.d"]["install"]
    monkeypatch.setenv("TROVE_EXTRA", "x")
    with pytest.raises(InputError, match="The variable <TROVE_EXTRA> is not set"):
        package_actions([element], {"TROVE_FLAVOUR": "a"})


def test_an_install_elsewhere_keeps_a_package_dib_would_keep(user_elements):
    # DIB's rule: a package another element installs for good is not removed
    keeper = user_elements("tib-keeper", {"package-installs.yaml": "shared:\n"})
    remover = user_elements("tib-remover", {"package-installs.yaml":
                                            "shared:\n  uninstall: true\n"})
    assert package_actions([keeper, remover], {}) == {
        "install.d": {"install": ["shared"], "uninstall": []}}
    assert package_actions([remover, keeper], {}) == {
        "install.d": {"install": ["shared"], "uninstall": []}}


def test_package_actions_across_elements_keep_element_order(known, user_elements):
    mine = user_elements("tib-more", {"package-installs.yaml": "extra-tool:\n"})
    env = {"TROVE_GUEST_AGENT_INSTALL": "release", "DIB_RELEASE": "bookworm"}
    actions = package_actions([known["container-engine"], mine, known["guest-agent"]], env,
                              os_element=known["debian-minimal"])
    assert actions["install.d"]["install"] == \
        ["docker.io", "apparmor", "extra-tool", "python3-venv"]


def test_the_os_decides_a_when(known):
    """container-engine's docker-cli: on Debian after bookworm only, with
    DISTRO_NAME from the OS element."""
    def engine(os_name, release):
        env = {"DIB_RELEASE": release}
        return package_actions([known["container-engine"]], env,
                               os_element=known[os_name])["install.d"]["install"]
    assert "docker-cli" in engine("debian-minimal", "trixie")
    assert "docker-cli" not in engine("debian-minimal", "bookworm")
    assert "docker-cli" not in engine("ubuntu-minimal", "noble")


def test_package_actions_search_the_plans_elements_path(user_elements):
    mine = user_elements("tib-more", {"package-installs.yaml": "extra-tool:\n"})
    assert package_actions([mine], {}, elements_path=user_path(user_elements)) == {
        "install.d": {"install": ["extra-tool"], "uninstall": []}}
    # DIB's squash looks the elements up on the path it is given
    assert package_actions([mine], {}, elements_path=(shipped_dir("elements"),)) == {}


def test_when_naming_an_unset_variable(user_elements):
    element = user_elements("tib-when", {"package-installs.yaml": """
        fancy:
          when: TROVE_NOPE = 1
        """})
    with pytest.raises(InputError) as err:
        package_actions([element], {"TROVE_FLAVOUR": "a"})
    assert err.value.message == (
        "package-installs: diskimage-builder's package-installs-squash refused the elements' "
        "package-installs files: RuntimeError: The variable <TROVE_NOPE> is not set")
    assert err.value.exit_code == 2


def test_when_without_an_operator(user_elements):
    element = user_elements("tib-when", {"package-installs.yaml": """
        fancy:
          when: TROVE_FLAVOUR
        """})
    with pytest.raises(InputError, match="refused the elements' package-installs files: "
                                         "Malformed when line: <TROVE_FLAVOUR>$"):
        package_actions([element], {"TROVE_FLAVOUR": "a"})


def test_no_package_installs(known):
    assert package_actions([known["mariadb"], known["postgresql"]], {}) == {}


def test_empty_package_installs_fails_as_in_dib(known, user_elements):
    empty = user_elements("tib-empty", {"package-installs.yaml": "# nothing\n"})
    with pytest.raises(InputError, match="package-installs-squash refused"):
        package_actions([known["mariadb"], empty], {})


def test_packages_in_a_phase_dib_installs_none_in(user_elements):
    late = user_elements("tib-late-pkgs", {"package-installs.yaml":
                                           "late:\n  phase: finalise.d\n"})
    with pytest.raises(PhaseRefused) as err:
        package_actions([late], {})
    assert err.value.message == (
        "element tib-late-pkgs: package-installs phase finalise.d: diskimage-builder installs "
        "packages only in pre-install.d, install.d, post-install.d")


def test_package_steps_are_dibs_package_installs_scripts():
    steps = package_steps()
    assert list(steps) == ["pre-install.d", "install.d", "post-install.d"]
    folder = elements.dib_elements_dir() / "package-installs"
    for phase, (install, remove) in steps.items():
        assert (folder / phase / install).is_file() and (folder / phase / remove).is_file()
        assert "package-installs" in install and "package-uninstalls" in remove
        assert install < remove


PKG_MAP = """{
  "default": {"web": "httpd", "tool": "tool"},
  "family": {"debian": {"web": "nginx-light", "windows-only": ""}},
  "release": {"debian": {"bookworm": {"tool": "tool-bookworm"}}}
}
"""


@pytest.mark.parametrize("release, tool", [("bookworm", "tool-bookworm"), ("trixie", "tool")])
def test_pkg_map(known, user_elements, release, tool):
    mapped = user_elements("tib-mapped", {
        "pkg-map": PKG_MAP,
        "package-installs.yaml": "web:\nwindows-only:\ntool:\nunmapped:\n"})
    plain = user_elements("tib-plain", {"package-installs.yaml": "web:\n"})
    actions = package_actions([mapped, plain], {"DIB_RELEASE": release},
                              os_element=known["debian-minimal"])
    assert actions["install.d"]["install"] == ["nginx-light", tool, "unmapped", "web"]


def test_pkg_map_needs_the_distribution(user_elements):
    mapped = user_elements("tib-mapped", {"pkg-map": PKG_MAP,
                                          "package-installs.yaml": "web:\n"})
    with pytest.raises(InputError, match="no DISTRO_NAME"):
        package_actions([mapped], {})


# --------------------------------------------------------------------------
# element_env(): environment.d, as DIB sources it

def test_environment_d_defaults(known):
    own = [known[n] for n in ("trove-guest", "mariadb", "guest-agent", "dev-access")]
    env = element_env(own, {})
    assert env["TROVE_GUEST_USER"] == "trove"
    assert env["DIB_CLOUD_INIT_DATASOURCES"] == "ConfigDrive, OpenStack"
    assert env["TROVE_DATASTORE_RUNTIME"] == "package"
    assert env["TROVE_GUEST_AGENT_INSTALL"] == "release"
    assert env["TROVE_DEV_SSH_PUBKEY"] == ""
    assert not [k for k in env if not k.startswith(("TROVE_", "DIB_"))]


def test_plan_variables_win_over_defaults(own_of):
    plan, _own, env = own_of("prod-mariadb", ["guest_user=dbagent"])
    assert env["TROVE_GUEST_USER"] == "dbagent"
    assert env["TROVE_DATASTORE_RUNTIME"] == "container"
    assert env["TROVE_GUEST_AGENT_VERSION"] == "26.0.0"
    assert env["TROVE_CONTAINER_IMAGES_LIST"] == ""          # a default: not in the plan
    assert {k: env[k] for k in plan.env} == plan.env


def test_environment_ignores_the_build_hosts_variables(known, monkeypatch):
    monkeypatch.setenv("TROVE_GUEST_USER", "from-the-host")
    monkeypatch.setenv("DIB_RELEASE", "from-the-host")
    env = element_env([known["trove-guest"]], {"OTHER": "kept"})
    assert env["TROVE_GUEST_USER"] == "trove"
    assert "DIB_RELEASE" not in env
    assert env["OTHER"] == "kept"


def test_environment_d_sourced_in_name_order_across_elements(user_elements):
    late = user_elements("tib-late", {
        "environment.d/20-late.bash": "export TROVE_ORDER=${TROVE_ORDER:-late}\n"})
    early = user_elements("tib-early", {
        "environment.d/10-early.bash": "export TROVE_ORDER=${TROVE_ORDER:-early}\n"})
    assert element_env([late, early], {})["TROVE_ORDER"] == "early"
    assert element_env([late, early], {"TROVE_ORDER": "plan"})["TROVE_ORDER"] == "plan"


def test_failing_environment_d(user_elements):
    bad = user_elements("tib-bad-env", {
        "environment.d/10-bad.bash": "export TROVE_X=$TROVE_UNSET_VARIABLE\n"})
    with pytest.raises(BuildError) as err:
        element_env([bad], {})
    assert err.value.message.startswith("environment.d failed: ")
    assert "TROVE_UNSET_VARIABLE" in err.value.message


# --------------------------------------------------------------------------
# base_plan(): the cached OS base, built by DIB

def base_of(plan, known):
    _own, dib = resolve(plan.elements, plan.elements_path, known)
    return base_plan(plan, dib)


def test_base_plan_elements(plan_of, known):
    base, key = base_of(plan_of("prod-mariadb"), known)
    assert base.elements[:3] == ("debian-minimal", "vm", "block-device-mbr")
    assert {"openssh-server", "sysprep", "package-installs"} <= set(base.elements)
    # of the shipped elements only the kernel's: DIB's bootloader must see
    # the profile's kernel
    assert set(base.elements) & set(SHIPPED) == {"guest-kernel"}
    assert len(set(base.elements)) == len(base.elements)
    assert base.packages == ()
    assert base.env and all(k.startswith("DIB_") for k in base.env
                            if k != "TROVE_GUEST_KERNEL")
    assert base.env["DIB_RELEASE"] == "trixie"
    assert base.env["TROVE_GUEST_KERNEL"] == "linux-image-cloud-amd64"
    assert re.fullmatch(r"[0-9a-f]{16}", key)
    # DIB can build it: its elements, on the same element path
    argv, _env = DibBackend().command(base, Path("/w"), Path("/c"))
    assert argv[-len(base.elements):] == list(base.elements)


def test_base_key_is_stable_and_shared_by_datastores(plan_of, known):
    _base, key = base_of(plan_of("prod-mariadb"), known)
    assert base_of(plan_of("prod-mariadb"), known)[1] == key
    assert base_of(plan_of("prod-postgresql"), known)[1] == key


@pytest.mark.parametrize("change", [
    lambda plan_of: plan_of("prod-mariadb", ["image.size=6G"]),
    lambda plan_of: plan_of("prod-mariadb", ["debian_mirror=http://mirror.example/debian"]),
    lambda plan_of: dataclasses.replace(plan_of("prod-mariadb"), env={
        **plan_of("prod-mariadb").env, "DIB_DEBIAN_COMPONENTS": "main,contrib"}),
    lambda plan_of: plan_of("prod-mariadb", ["os.kernel=generic"]),
], ids=["image-size", "mirror", "dib-variable", "kernel"])
def test_base_key_changes_with_what_makes_the_base(plan_of, known, change):
    _base, key = base_of(plan_of("prod-mariadb"), known)
    assert base_of(change(plan_of), known)[1] != key


@pytest.mark.parametrize("sets", [["trove_version=27.0.0"], ["guest_user=dbagent"],
                                  ["datastore.version=11.4"]])
def test_base_key_ignores_what_the_elements_add(plan_of, known, sets):
    _base, key = base_of(plan_of("prod-mariadb"), known)
    changed = plan_of("prod-mariadb", sets)
    assert changed.env != plan_of("prod-mariadb").env
    assert base_of(changed, known)[1] == key


def test_base_is_qcow2_whatever_the_output_format(plan_of, known):
    base, _key = base_of(plan_of("prod-mariadb", ["image.format=raw"]), known)
    argv, _env = DibBackend().command(base, Path("/w"), Path("/c"))
    assert argv[argv.index("-t") + 1] == "qcow2"


# --------------------------------------------------------------------------
# guest_script(): one phase in the guest

def test_guest_script(tmp_path):
    scripts = [("10-first", tmp_path / "a"), ("20-second", tmp_path / "b")]
    text = guest.guest_script("install.d", scripts, ["pkg-a", "odd name"], ["old-pkg"])
    lines = text.splitlines()
    source = lines.index(f"set -a; . {IN_TARGET}/environment; set +a")
    install = lines.index("install-packages pkg-a 'odd name'")
    first = lines.index(f"{IN_TARGET}/install.d/10-first")
    second = lines.index(f"{IN_TARGET}/install.d/20-second")
    purge = lines.index("apt-get -y -q purge old-pkg")
    assert lines[:2] == ["set -eu", "set -o pipefail"]
    assert source < install < first < second < purge
    assert lines[first - 1] == "echo '>> install.d/10-first'"
    # packages go in and out where DIB's package-installs scripts run
    assert lines[install - 1] == "echo '>> install.d/01-package-installs'"
    assert lines[purge - 1] == "echo '>> install.d/99-package-uninstalls'"
    assert lines[purge + 1] == "apt-get -y -q autoremove --purge"
    path = next(ln for ln in lines if ln.startswith("export PATH="))
    assert path.startswith(f"export PATH={IN_TARGET}/bin:")     # install-packages first
    assert lines.index(path) < install
    proc = subprocess.run(["bash", "-n"], input=text, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_guest_script_places_packages_among_the_scripts_as_dib(tmp_path):
    install, remove = package_steps()["post-install.d"]
    before, after = "00-early", "99-late"
    assert before < install and remove < after
    scripts = [(before, tmp_path / "a"), ("50-middle", tmp_path / "b"), (after, tmp_path / "c")]
    text = guest.guest_script("post-install.d", scripts, ["new"], ["old"])
    ran = [ln.split("/", 1)[1].rstrip("'") for ln in text.splitlines()
           if ln.startswith("echo '>> ")]
    assert ran == [before, install, "50-middle", remove, after]
    lines = text.splitlines()
    assert lines[lines.index(f"echo '>> post-install.d/{install}'") + 1] == \
        "install-packages new"
    assert lines[lines.index(f"echo '>> post-install.d/{remove}'") + 1] == \
        "apt-get -y -q purge old"


def test_guest_script_without_packages(tmp_path):
    text = guest.guest_script("finalise.d", [("90-x", tmp_path / "x")], [], [])
    assert "install-packages" not in text
    assert "apt-get" not in text
    assert text.endswith(f"echo '>> finalise.d/90-x'\n{IN_TARGET}/finalise.d/90-x\n")


# --------------------------------------------------------------------------
# apply(): everything in one appliance launch, against FakeGuestFS

@pytest.fixture
def backend():
    return VirtCustomizeBackend(guestfs_factory=FakeGuestFS)


@pytest.fixture
def logf(tmp_path):
    with open(tmp_path / "build.log", "w", encoding="utf-8") as fh:
        yield fh


def apply(backend, own, env, tmp_path, logf, g=None):
    """make_hooks then apply, as build() runs them, with the packages DIB's
    package-installs decides; returns the handle."""
    g = g if g is not None else backend.guestfs()
    hooks = guest.make_hooks(own, env, tmp_path, logf)
    os_element = elements.discover()["debian-minimal"]
    guest.apply(g, own, package_actions(own, env, os_element=os_element), hooks, logf)
    logf.flush()
    return g


def test_the_factory_is_the_seam(backend):
    assert isinstance(backend.guestfs(), FakeGuestFS)
    assert backend.guestfs() is not backend.guestfs()


def test_apply_prod_mariadb(backend, own_of, tmp_path, logf):
    _plan, own, env = own_of("prod-mariadb")
    g = apply(backend, own, env, tmp_path, logf)
    # mounted before anything is written
    assert ("mount", (FakeGuestFS.ROOT, "/"), {}) in g.calls
    assert g.names().index("mount") < g.names().index("write")
    # the phases in DIB's order, then generalise
    assert g.steps() == ["pre-install.d", "install.d", "post-install.d", "finalise.d",
                         "generalise"]
    install = g.guest_script("install.d").splitlines()
    ran = [ln.split("/", 1)[1].rstrip("'") for ln in install if ln.startswith("echo '>> ")]
    assert ran == ["01-package-installs", "50-trove-guest-user", "60-guest-agent",
                   "65-container-engine-access", "66-container-images", "70-mariadb",
                   "70-trove-certs", "80-guest-kernel"]
    packages = next(ln for ln in install if ln.startswith("install-packages "))
    assert install.index(packages) < install.index("echo '>> install.d/50-trove-guest-user'")
    assert not [ln for ln in install if "purge" in ln]       # nothing to remove
    assert {"cloud-init", "sudo", "docker.io", "python3-venv"} <= set(packages.split()[1:])
    assert "git" not in packages.split()                     # a release install
    assert "install-packages" not in g.guest_script("finalise.d")
    assert [ln for ln in g.guest_script("post-install.d").splitlines()
            if ln.startswith(f"{IN_TARGET}/")] == [
        f"{IN_TARGET}/post-install.d/{n}" for n in (
            "60-guest-agent-enable", "65-container-engine-enable",
            "66-container-images-enable", "70-mariadb-enable", "70-trove-certs-enable")]
    # the hooks, in the guest
    shipped = Path(own[0].path).parent
    assert g.files[f"{IN_TARGET}/install.d/60-guest-agent"] == \
        (shipped / "guest-agent/install.d/60-guest-agent").read_bytes()
    assert g.modes[f"{IN_TARGET}/install.d/60-guest-agent"] & 0o111
    assert g.modes[f"{IN_TARGET}/bin/install-packages"] == 0o755
    assert b"TROVE_GUEST_USER=trove\n" in g.files[f"{IN_TARGET}/environment"]
    # the output of each step is in the log
    log = (tmp_path / "build.log").read_text()
    for n in range(1, 5):
        assert f"[guest] step {n} done\n" in log
    assert ">> extra-data.d/50-guest-agent-inputs\n" in log
    assert log.index("# install.d: ") < log.index("# post-install.d: ")


def test_static_files_are_unpacked_at_the_root(backend, own_of, tmp_path, logf):
    _plan, own, env = own_of("prod-mariadb")
    g = apply(backend, own, env, tmp_path, logf)
    at_root = [members for directory, members in g.tars if directory == "/"]
    assert len(at_root) == 1
    in_tar = {posixpath.normpath(m.name) for m in at_root[0]}
    assert {"etc/systemd/system/guest-agent.service",
            "etc/systemd/system/docker-hostnic.socket",
            "etc/systemd/system/trove-preload-images.service",
            "usr/local/sbin/trove-preload-images"} <= in_tar
    shipped = Path(own[0].path).parent
    assert g.files["/etc/systemd/system/guest-agent.service"] == (
        shipped / "guest-agent/static/etc/systemd/system/guest-agent.service").read_bytes()
    assert g.modes["/usr/local/sbin/trove-preload-images"] & 0o111
    # unpacked before the phases run
    assert g.names().index("tar_in") < g.names().index("sh")


def test_static_tar_leaves_the_guests_root_folder_alone(backend, own_of, tmp_path, logf):
    _plan, own, env = own_of("prod-mariadb")
    g = apply(backend, own, env, tmp_path, logf)
    [members] = [members for directory, members in g.tars if directory == "/"]
    assert all(m.uid == 0 and m.gid == 0 for m in members)
    assert "." not in {posixpath.normpath(m.name) for m in members}


@pytest.mark.parametrize("before", ["symlink", "file", "absent"])
def test_resolv_conf_swapped_for_the_build_and_restored(backend, known, tmp_path, logf,
                                                        before):
    g = backend.guestfs()
    g.symlinks.clear()
    if before == "symlink":
        g.symlinks["/etc/resolv.conf"] = STUB_RESOLV
    elif before == "file":
        g.files["/etc/resolv.conf"] = b"nameserver 192.0.2.53\n"
    own = [known["trove-guest"]]
    apply(backend, own, element_env(own, {}), tmp_path, logf, g)
    assert g.resolv_during and all(r == BUILD_RESOLV for r in g.resolv_during)
    assert g.symlinks.get("/etc/resolv.conf") == (STUB_RESOLV if before == "symlink" else None)
    assert g.files.get("/etc/resolv.conf") == (
        b"nameserver 192.0.2.53\n" if before == "file" else None)
    assert "/etc/resolv.conf.tib-saved" not in {**g.files, **g.symlinks}


def test_build_ca_bundle_reaches_the_hooks(backend, own_of, tmp_path, logf, monkeypatch):
    ca = tmp_path / "proxy-ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\nMIIfake\n-----END CERTIFICATE-----\n")
    monkeypatch.setenv("TROVE_IMAGE_BUILDER_CA_BUNDLE", str(ca))
    _plan, own, env = own_of("prod-mariadb")
    assert env["TROVE_BUILD_CA_BUNDLE"] == str(ca)
    g = apply(backend, own, env, tmp_path, logf)
    assert (tmp_path / "hooks" / "build-ca-bundle.pem").read_bytes() == ca.read_bytes()
    assert g.files[f"{IN_TARGET}/build-ca-bundle.pem"] == ca.read_bytes()


def test_no_build_ca_bundle_without_one(backend, own_of, tmp_path, logf):
    _plan, own, env = own_of("prod-mariadb")
    assert env["TROVE_BUILD_CA_BUNDLE"] == ""
    g = apply(backend, own, env, tmp_path, logf)
    assert not (tmp_path / "hooks" / "build-ca-bundle.pem").exists()
    assert f"{IN_TARGET}/build-ca-bundle.pem" not in g.files


def test_hooks_environment_reads_back_in_bash(backend, own_of, tmp_path, logf):
    _plan, own, env = own_of("prod-mariadb")
    hooks = guest.make_hooks(own, env, tmp_path, logf)
    proc = subprocess.run(["bash", "-c", f"set -a; . {hooks / 'environment'}; env -0"],
                          env={"PATH": os.environ["PATH"]}, capture_output=True, check=True)
    back = dict(item.decode().split("=", 1) for item in proc.stdout.split(b"\0") if item)
    assert {k: back.get(k) for k in env} == env
    assert back["DIB_CLOUD_INIT_DATASOURCES"] == "ConfigDrive, OpenStack"


def test_failing_extra_data_script(backend, user_elements, tmp_path, logf):
    bad = user_elements("tib-bad-extra", {
        "extra-data.d/10-fetch": "#!/bin/bash\necho cannot fetch >&2\nexit 4\n"})
    with pytest.raises(BuildError) as err:
        guest.make_hooks([bad], {}, tmp_path, logf)
    assert err.value.message == "extra-data.d/10-fetch failed (exit 4)"
    logf.flush()
    assert "cannot fetch" in (tmp_path / "build.log").read_text()


def test_build_only_packages_leave_at_the_end_of_their_phase(backend, user_elements,
                                                             tmp_path, logf):
    alpha = user_elements("tib-alpha", {
        "pre-install.d/10-pre": SCRIPT.format("pre"),
        "install.d/20-inst": SCRIPT.format("inst"),
        "finalise.d/30-fin": SCRIPT.format("fin"),
        "package-installs.yaml": """
            early:
              phase: pre-install.d
            helper-dev:
              build-only: true
            gone:
              uninstall: true
            """})
    beta = user_elements("tib-beta", {"install.d/10-inst": SCRIPT.format("inst"),
                                      "post-install.d/10-post": SCRIPT.format("post")})
    g = apply(backend, [alpha, beta], {}, tmp_path, logf)
    assert g.steps() == ["pre-install.d", "install.d", "post-install.d", "finalise.d",
                         "generalise"]
    pre = g.guest_script("pre-install.d")
    assert pre.index("install-packages early\n") < \
        pre.index(f"{IN_TARGET}/pre-install.d/10-pre")
    install = g.guest_script("install.d")
    assert install.index("install-packages helper-dev\n") < \
        install.index(f"{IN_TARGET}/install.d/10-inst\n") < \
        install.index(f"{IN_TARGET}/install.d/20-inst\n") < \
        install.index("apt-get -y -q purge helper-dev gone\n")
    assert "apt-get" not in g.guest_script("post-install.d")
    assert "apt-get" not in g.guest_script("finalise.d")


def test_failing_phase(own_of, tmp_path, logf):
    _plan, own, env = own_of("prod-mariadb")
    guest_log = "Failed to enable unit: Unit file mariadb.service does not exist.\n"
    g = FakeGuestFS(fail_on="run-post-install.d", guest_log=guest_log)
    with pytest.raises(BuildError) as err:
        apply(VirtCustomizeBackend(), own, env, tmp_path, logf, g)
    assert err.value.message.startswith("post-install.d failed in the guest: ")
    assert "exited with status 100" in err.value.message
    assert err.value.exit_code == 1
    assert g.steps() == ["pre-install.d", "install.d", "post-install.d"]  # none after it
    log = (tmp_path / "build.log").read_text()
    assert log.endswith(guest_log)
    assert "[guest] step 1 done\n" in log


def test_no_operating_system(backend, known, tmp_path, logf):
    g = backend.guestfs()
    g.inspect_os = lambda: []
    with pytest.raises(BuildError, match="found no operating system"):
        apply(backend, [known["trove-guest"]], {}, tmp_path, logf, g)
    assert g.scripts == []


# --------------------------------------------------------------------------
# build(): qemu-img and the cached base replaced at the seam

@pytest.fixture
def offline(monkeypatch, tmp_path):
    """build() without qemu-img, DIB or KVM checks: run() records argv and
    makes the file named last; the base image is a path; each handle the
    backend makes is a FakeGuestFS (options in offline.handle_options)."""
    state = types.SimpleNamespace(commands=[], handles=[], env_at_create=[],
                                  handle_options={}, accelerator="kvm")

    def fake_run(argv, **_kwargs):
        state.commands.append([str(a) for a in argv])
        Path(argv[-1]).write_bytes(b"QFI\xfb")

    def factory():
        g = FakeGuestFS(**state.handle_options)
        state.handles.append(g)
        state.env_at_create.append(os.environ.get("LIBGUESTFS_BACKEND_SETTINGS"))
        return g

    base = tmp_path / "cache" / "base" / "0123456789abcdef.qcow2"
    monkeypatch.setattr(vc, "run", fake_run)
    monkeypatch.setattr(VirtCustomizeBackend, "base_image",
                        lambda self, plan, dib, cache_dir, timings: base)
    monkeypatch.setattr(host, "accelerator", lambda: state.accelerator)
    # build() sets it for libguestfs: give it back afterwards
    monkeypatch.setenv("LIBGUESTFS_BACKEND_SETTINGS", "")
    monkeypatch.delenv("LIBGUESTFS_BACKEND_SETTINGS")
    state.base = base
    state.backend = VirtCustomizeBackend(guestfs_factory=factory)
    state.workdir = tmp_path / "work"
    state.workdir.mkdir()

    def _build(plan):
        state.timings = {}
        state.log = tmp_path / "image.log"
        return state.backend.build(plan, state.workdir, tmp_path / "cache", state.log,
                                   state.timings)
    state.build = _build
    return state


@pytest.mark.parametrize("sets, convert", [
    ((), ["-c", "-O", "qcow2", "-o", "compression_type=zstd"]),
    (["image.compression=zlib"], ["-c", "-O", "qcow2"]),
    (["image.compression=none"], ["-O", "qcow2"]),
    (["image.format=raw"], ["-O", "raw"]),
])
def test_build_one_launch_then_flatten(offline, plan_of, sets, convert):
    image = offline.build(plan_of("prod-mariadb", sets))
    overlay = offline.workdir / "overlay.qcow2"
    fmt = convert[convert.index("-O") + 1]
    assert image == offline.workdir / f"image.{fmt}"
    assert image.is_file() and not overlay.exists()
    assert offline.commands == [
        ["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", str(offline.base),
         str(overlay)],
        ["qemu-img", "convert", *convert, str(overlay), str(image)]]
    [g] = offline.handles
    appliance = [c for c in g.calls if c[0] in (
        "set_network", "add_drive_opts", "launch", "fstrim", "sync", "umount_all", "shutdown",
        "close")]
    assert appliance == [
        ("set_network", (True,), {}),
        ("add_drive_opts", (str(overlay),), {"format": "qcow2", "readonly": False,
                                             "discard": "besteffort"}),
        ("launch", (), {}), ("fstrim", ("/",), {}), ("sync", (), {}), ("umount_all", (), {}),
        ("shutdown", (), {}), ("close", (), {})]
    assert g.names().index("launch") < g.names().index("inspect_os")
    assert g.steps()[-1] == "generalise"
    assert "appliance-launch" in offline.timings and "convert" in offline.timings
    assert "[guest] step 1 done" in offline.log.read_text()


def test_build_launch_failure(offline, plan_of):
    offline.handle_options = {"launch_error": "could not create appliance through libvirt"}
    with pytest.raises(BuildError) as err:
        offline.build(plan_of("prod-mariadb"))
    assert err.value.message == (f"libguestfs: could not create appliance through libvirt; "
                                 f"log: {offline.log}")
    [g] = offline.handles
    assert g.closed and g.scripts == []
    assert len(offline.commands) == 1                         # no convert


def test_build_failing_phase_closes_the_handle(offline, plan_of):
    offline.handle_options = {"fail_on": "run-install.d", "guest_log": "E: no space left\n"}
    with pytest.raises(BuildError, match="^install.d failed in the guest: "):
        offline.build(plan_of("prod-mariadb"))
    assert offline.handles[0].closed
    assert offline.log.read_text().endswith("E: no space left\n")


@pytest.mark.parametrize("accelerator, setting", [("tcg", "force_tcg"), ("kvm", None)])
def test_build_sets_the_backend_before_the_handle_is_made(offline, plan_of, accelerator,
                                                          setting):
    # libguestfs reads LIBGUESTFS_BACKEND_SETTINGS when the handle is created
    offline.accelerator = accelerator
    offline.build(plan_of("prod-mariadb"))
    assert offline.env_at_create == [setting]


def test_build_installs_the_profiles_packages(offline, plan_of):
    offline.build(plan_of("prod-mariadb", ["packages=[htop]"]))
    [g] = offline.handles
    assert any("htop" in text.decode(errors="replace") for path, text in g.files.items()
               if path.startswith(f"{IN_TARGET}/run-"))


# --------------------------------------------------------------------------
# host_checks(): the common checks with this backend's tools, then libguestfs's

@pytest.fixture
def boot_kernels(monkeypatch):
    """The names Path('/boot').glob('vmlinuz-*') finds (a list to fill)."""
    found = []
    real_glob = Path.glob

    def glob(self, pattern, *args, **kwargs):
        if self == Path("/boot"):
            assert pattern == "vmlinuz-*"
            return iter([Path("/boot") / name for name in found])
        return real_glob(self, pattern, *args, **kwargs)
    monkeypatch.setattr(Path, "glob", glob)
    return found


def checks_by_name(backend):
    found = backend.libguestfs_checks()
    assert all(isinstance(c, host.Check) for c in found)
    return {c.name: c for c in found}


def test_libguestfs_checks_all_present(backend, boot_kernels, monkeypatch):
    monkeypatch.setitem(sys.modules, "guestfs", types.ModuleType("guestfs"))
    monkeypatch.setattr(host, "accelerator", lambda: "kvm")
    boot_kernels += ["vmlinuz-6.1.0-26-amd64", "vmlinuz-6.1.0-25-amd64"]
    checks = checks_by_name(backend)
    assert list(checks) == ["libguestfs bindings", "appliance kernel",
                            "libguestfs accelerator"]
    assert all(c.ok and c.fix == "" for c in checks.values())
    assert checks["libguestfs bindings"].detail == f"import guestfs works in {sys.executable}"
    assert checks["appliance kernel"].detail == "/boot/vmlinuz-6.1.0-26-amd64"
    assert checks["libguestfs accelerator"].detail == "kvm"
    host.require(list(checks.values()), "build")


def test_libguestfs_checks_missing_bindings_and_kernel(backend, boot_kernels, monkeypatch):
    monkeypatch.setitem(sys.modules, "guestfs", None)        # import guestfs fails
    monkeypatch.setattr(host, "accelerator", lambda: "tcg")
    checks = checks_by_name(backend)
    bindings, kernel = checks["libguestfs bindings"], checks["appliance kernel"]
    assert not bindings.ok
    assert bindings.detail == f"{sys.executable} cannot import guestfs"
    assert "python3-guestfs" in bindings.fix
    assert not kernel.ok and kernel.detail == "no /boot/vmlinuz-*"
    assert "linux-image-amd64" in kernel.fix
    accel = checks["libguestfs accelerator"]
    assert accel.ok and accel.detail.startswith("tcg (LIBGUESTFS_BACKEND_SETTINGS=force_tcg")
    with pytest.raises(HostError) as err:
        host.require(list(checks.values()), "build")
    assert "libguestfs bindings" in err.value.message and "appliance kernel" in err.value.message
    assert "accelerator" not in err.value.message


def test_missing_bindings_when_the_handle_is_made(monkeypatch):
    monkeypatch.setitem(sys.modules, "guestfs", None)
    with pytest.raises(HostError, match="cannot import guestfs; install 'python3-guestfs'"):
        VirtCustomizeBackend().guestfs()


def test_host_checks_are_the_common_ones_then_libguestfs(backend, monkeypatch):
    monkeypatch.setitem(sys.modules, "guestfs", types.ModuleType("guestfs"))
    found = backend.host_checks()
    assert all(isinstance(c, host.Check) for c in found)
    assert [c.name for c in found] == [c.name for c in host.checks(backend.tools)] + [
        "libguestfs bindings", "appliance kernel", "libguestfs accelerator"]
    assert {"tool virt-customize", "tool supermin", "tool qemu-img"} <= {c.name for c in found}
