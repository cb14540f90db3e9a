"""Prune the guest agent's virtualenv to what the agent can load.

Run with the venv's own python, in the image, after pip installed the agent
(install.d/60-guest-agent does, for production images with the agent from a
release). Static analysis only: nothing of the agent is imported here.

1. The import closure. An ast walk over the venv's site-packages from the
   roots below: ``import x``, ``from x import y`` (relative too), wherever
   they stand (in functions, under try/except, under if), calls such as
   ``importutils.import_module('a.b')``, ``import_class('a.b.C')`` or
   ``__import__('a')`` with a literal argument, and the targets of every
   entry point in the namespaces the walked code names in a string literal
   (stevedore and importlib.metadata take the namespace so:
   ``driver.DriverManager('oslo.messaging.drivers', ...)``), plus
   ENTRY_POINT_GROUPS. A module walked once is walked in full: the walk
   keeps more than the agent imports on one path, never less.
2. A distribution none of whose files is in the closure loses its files in
   site-packages (its console scripts too), and so do pip, setuptools and
   wheel; every ``*.dist-info`` folder stays (pbr, stevedore and
   importlib.metadata read them). A kept distribution with compiled
   extensions keeps what it requires (an extension imports what the walk
   cannot see, cffi's ``_cffi_backend`` say). ``tests``/``test`` packages
   of kept distributions that nothing in the closure imports go too.

What the roots are, from the Trove 26.0.0 source (sdist):
- setup.cfg, [entry_points] console_scripts: ``trove-guestagent =
  trove.cmd.guest:main`` (the unit's ExecStart) and ``trove-docker-plugin =
  trove.cmd.network_driver:main`` (the docker-hostnic.service of images
  with a container engine).
- trove/cmd/guest.py: the manager is ``dbaas.datastore_registry()
  .get(CONF.datastore_manager)``; trove/guestagent/dbaas.py takes it from
  trove/common/constants.py REGISTRY_EXT_DEFAULTS (dotted class paths under
  trove.guestagent.datastore) and CONF.datastore_registry_ext;
  trove/common/rpc/service.py loads it with ``importutils.import_object``.
  The replication strategies are dotted paths under
  trove.guestagent.strategies (trove/common/cfg.py, ``replication_strategy``
  of the datastore option groups), the module drivers come from the
  ``trove.guestagent.module.drivers`` entry points (trove/guestagent/module/
  driver_manager.py): so every module of the trove.guestagent package is a
  root.
- trove/rpc.py: oslo.messaging's transport (``get_rpc_transport``), whose
  driver stevedore loads from ``oslo.messaging.drivers`` (rabbit:
  impl_rabbit, kombu, amqp) and notifier drivers from
  ``oslo.messaging.notify.drivers``.
"""
import argparse
import ast
import configparser
import os
from pathlib import Path
import re
import shutil
import sys
import sysconfig

ROOT_SCRIPTS = ("trove-guestagent", "trove-docker-plugin")
ROOT_PACKAGES = ("trove.guestagent",)
# Namespaces loaded by name; the walk also finds the ones its code names.
ENTRY_POINT_GROUPS = ("oslo.messaging.drivers", "oslo.messaging.notify.drivers",
                      "oslo.messaging.executors", "trove.guestagent.module.drivers")
# Groups a string literal never makes a root of: what installers and
# build backends read (pbr's setup-time code names wsgi_scripts, say).
BUILD_TIME_GROUPS = ("console_scripts", "gui_scripts", "wsgi_scripts", "distutils.",
                     "setuptools.", "egg_info.",
                     # keystoneclient's own auth plugins, loaded by name only
                     # by keystoneclient.auth.base.get_plugin_class (its
                     # conf/cli loaders); the agent authenticates with
                     # keystoneauth1 (trove/common/clients.py)
                     "keystoneclient.auth.plugin",
                     # read by the sample-config and policy generators only
                     "oslo.config.opts", "oslo.policy.policies")
# Build-time code the walk does not enter: pbr's PEP 517 backend and
# setup.py commands (pbr/__init__.py imports pbr.pyprojecttoml in a
# function the build backend calls); the agent only reads its own version
# with pbr.version (trove/version.py). pbr itself stays.
BUILD_TIME_MODULES = ("pbr.pyprojecttoml", "pbr.build", "pbr.core", "pbr.packaging",
                      "pbr.hooks", "pbr.cmd", "pbr.builddoc", "pbr.testr_command",
                      "pbr._compat", "pbr.util", "pbr.tests",
                      # Controller code the agent's modules name only in
                      # controller-side functions: trove/guestagent/api.py
                      # imports trove.instance.models in API methods (the
                      # controller's RPC client of the agent; trove/cmd/
                      # guest.py reads only API.API_LATEST_VERSION), and
                      # trove/common/clients.py imports trove.dns.manager in
                      # dns_client (the taskmanager's).
                      "trove.instance.models", "trove.dns")
# Imports the walk does not follow (importer prefix, imported prefix): a
# command-line app's interactive shell, loaded only by
# cliff.app.App.interactive_mode (neutronclient's CLI classes import cliff;
# the agent runs no CLI).
EDGE_STOPS = (("cliff.app", "cmd2"), ("cliff.app", "cliff.interactive"))
ALWAYS_PRUNE = ("pip", "setuptools", "wheel")
# their modules: never walked (the agent installs nothing)
ALWAYS_PRUNE_MODULES = ("pip", "setuptools", "wheel", "pkg_resources", "_distutils_hack")
TEST_DIRS = ("tests", "test")
NOT_IN_FULL = (*TEST_DIRS, "testing", "fixture", "fixtures", "osc", "shell", "interactive",
               "migration_cli", "generator")
EXT_RE = re.compile(r"\.(cpython-[^.]*|abi3)?\.?(so|pyd)$")
REQ_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")


def canon(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


class Dist:
    def __init__(self, info: Path, site: Path):
        self.info = info
        meta = (info / "METADATA").read_text(errors="replace") \
            if (info / "METADATA").is_file() else ""
        self.name = next((ln.split(":", 1)[1].strip() for ln in meta.splitlines()
                          if ln.startswith("Name:")), info.name.split("-")[0])
        self.requires = [canon(m.group(1)) for ln in meta.splitlines()
                         if ln.startswith("Requires-Dist:") and "extra ==" not in ln
                         for m in [REQ_NAME.match(ln.split(":", 1)[1])] if m]
        self.files: list[Path] = []
        record = info / "RECORD"
        if record.is_file():
            for line in record.read_text(errors="replace").splitlines():
                rel = line.rsplit(",", 2)[0] if line.count(",") >= 2 else line
                if rel:
                    self.files.append(Path(os.path.normpath(site / rel)))
        self.entry_points = configparser.ConfigParser(interpolation=None, delimiters=("=",))
        self.entry_points.optionxform = str
        if (info / "entry_points.txt").is_file():
            self.entry_points.read_string((info / "entry_points.txt").read_text())

    @property
    def key(self) -> str:
        return canon(self.name)

    def payload(self, site: Path) -> list[Path]:
        """Its files other than its metadata."""
        return [f for f in self.files if self.info not in f.parents]

    def has_extensions(self) -> bool:
        return any(EXT_RE.search(f.name) for f in self.files)


def module_index(site: Path) -> dict[str, Path]:
    """Module name -> file (a package's __init__, or its folder when it is a
    namespace package) for everything importable from site."""
    index: dict[str, Path] = {}

    def walk(folder: Path, prefix: str) -> None:
        for entry in sorted(folder.iterdir()):
            name = entry.name
            if entry.is_dir():
                if not name.isidentifier():
                    continue
                init = entry / "__init__.py"
                index[prefix + name] = init if init.is_file() else entry
                walk(entry, f"{prefix}{name}.")
            elif name.endswith(".py"):
                stem = name[:-3]
                if stem.isidentifier() and stem != "__init__":
                    index[prefix + stem] = entry
            elif EXT_RE.search(name):
                stem = name.split(".", 1)[0]
                if stem.isidentifier():
                    index.setdefault(prefix + stem, entry)
    walk(site, "")
    return index


class Walker:
    def __init__(self, site: Path, dists: list[Dist]):
        self.site = site
        self.index = module_index(site)
        self.dists = dists
        self.groups = {g for d in dists for g in d.entry_points.sections()
                       if not g.startswith(BUILD_TIME_GROUPS)}
        self.closure: set[str] = set()
        self.groups_loaded: set[str] = set()
        self._todo: list[str] = []
        self.why: dict[str, str] = {}       # module -> the module that brought it
        self._current = "<root>"

    def add(self, dotted: str) -> None:
        """dotted and its parents, those that exist here."""
        if any(self._current.startswith(a) and dotted.startswith(b) for a, b in EDGE_STOPS) \
                or dotted.split(".")[0] in ALWAYS_PRUNE_MODULES:
            return
        parts = dotted.split(".")
        for i in range(1, len(parts) + 1):
            name = ".".join(parts[:i])
            if name not in self.index:
                return
            if name not in self.closure:
                self.closure.add(name)
                self.why[name] = self._current
                self._todo.append(name)

    def add_target(self, target: str) -> None:
        """'a.b.C' or 'a.b:C': the module, whichever prefix is one."""
        target = target.split(":", 1)[0].strip()
        self.add(target)
        if "." in target:
            self.add(target.rsplit(".", 1)[0])

    def add_package(self, package: str) -> None:
        self.add(package)
        prefix = package + "."
        for name in self.index:
            if name.startswith(prefix):
                self.add(name)

    def add_group(self, group: str) -> None:
        if group in self.groups_loaded:
            return
        self.groups_loaded.add(group)
        for dist in self.dists:
            if dist.entry_points.has_section(group):
                for _, target in dist.entry_points.items(group):
                    self.add_target(target)

    def run(self) -> set[str]:
        while self._todo:
            name = self._todo.pop()
            self._current = name
            path = self.index[name]
            if path.suffix == ".py" and not name.startswith(BUILD_TIME_MODULES):
                self._scan(name, path)
        return self.closure

    def _scan(self, name: str, path: Path) -> None:
        try:
            tree = ast.parse(path.read_bytes(), str(path))
        except (SyntaxError, ValueError):
            return          # cannot be imported either
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    self.add(alias.name)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = package.split(".")
                    up = parts[:len(parts) - node.level + 1]
                    base = ".".join(up + ([base] if base else []))
                self.add(base)
                for alias in node.names:
                    self.add(f"{base}.{alias.name}")
            elif isinstance(node, ast.Call):
                func = node.func
                fname = func.attr if isinstance(func, ast.Attribute) else \
                    func.id if isinstance(func, ast.Name) else None
                if fname and "import" in fname.lower() and node.args and \
                        isinstance(node.args[0], ast.Constant) and \
                        isinstance(node.args[0].value, str):
                    self.add_target(node.args[0].value)
            elif isinstance(node, ast.Constant) and isinstance(node.value, str) \
                    and node.value in self.groups:
                self.add_group(node.value)


def find_dists(site: Path) -> list[Dist]:
    return [Dist(p, site) for p in sorted(site.glob("*.dist-info")) if p.is_dir()]


def owners(dists: list[Dist]) -> dict[Path, Dist]:
    owner: dict[Path, Dist] = {}
    for dist in dists:
        for f in dist.files:
            owner.setdefault(f, dist)
    return owner


def walk_in_full(name: str) -> bool:
    """Whether a module of a used distribution is walked with it: not its
    tests, test fixtures, command-line shells or OpenStackClient plugins
    (the agent runs none), nor BUILD_TIME_MODULES. Walked all the same when
    the agent's code reaches it by an import."""
    parts = name.split(".")[1:]
    return not name.startswith(BUILD_TIME_MODULES) and \
        not any(p in NOT_IN_FULL or p.startswith("test_") for p in parts)


def closure(site: Path, dists: list[Dist]) -> tuple[Walker, set[str]]:
    """The modules the agent can load and the distributions they are in.

    A distribution other than trove that is used at all is walked in full
    (its tests and BUILD_TIME_MODULES aside): libraries load their own
    modules by computed names (oslo.service its backend, kombu its
    transports, eventlet its hubs), which a walk of literals misses."""
    walker = Walker(site, dists)
    trove = next((d for d in dists if d.key == "trove"), None)
    if trove is not None and trove.entry_points.has_section("console_scripts"):
        scripts = dict(trove.entry_points.items("console_scripts"))
        for script in ROOT_SCRIPTS:
            if script in scripts:
                walker.add_target(scripts[script])
    for package in ROOT_PACKAGES:
        walker.add_package(package)
    for group in ENTRY_POINT_GROUPS:
        walker.add_group(group)
    owner = owners(dists)
    module_of = {path: name for name, path in walker.index.items()}
    walked: set[str] = set()
    while True:
        modules = walker.run()
        used = {owner[walker.index[m]].key for m in modules if walker.index[m] in owner}
        used -= set(ALWAYS_PRUNE)
        new = used - walked - {"trove"}
        if not new:
            return walker, used
        walked |= new
        for dist in dists:
            if dist.key in new:
                for f in dist.files:
                    name = module_of.get(f)
                    if name and walk_in_full(name):
                        walker.add(name)


def plan(site: Path, venv: Path) -> dict:
    """What goes and what stays (nothing is removed here)."""
    dists = find_dists(site)
    walker, kept = closure(site, dists)
    modules = walker.closure
    by_key = {d.key: d for d in dists}
    todo = [k for k in kept if by_key[k].has_extensions()]
    while todo:
        for req in by_key[todo.pop()].requires:
            if req in by_key and req not in kept and req not in ALWAYS_PRUNE:
                kept.add(req)
                if by_key[req].has_extensions():
                    todo.append(req)
    pruned = sorted((d for d in dists if d.key not in kept), key=lambda d: d.key)
    remove: set[Path] = set()
    for dist in pruned:
        for f in dist.payload(site):
            if venv in f.parents:
                remove.add(f)
    test_dirs = []
    for dirpath, dirnames, _ in os.walk(site):
        for d in list(dirnames):
            full = Path(dirpath) / d
            if d.endswith(".dist-info") or d == "__pycache__":
                dirnames.remove(d)
            elif d in TEST_DIRS and (full / "__init__.py").is_file():
                dotted = ".".join(full.relative_to(site).parts)
                if not any(m == dotted or m.startswith(dotted + ".") for m in modules):
                    test_dirs.append(full)
                dirnames.remove(d)
    return {"dists": dists, "closure": modules, "pruned": pruned, "remove": remove,
            "test_dirs": test_dirs, "kept": sorted(kept), "why": walker.why}


def du(path: Path) -> int:
    total = 0
    for dirpath, _, files in os.walk(path):
        for f in files:
            try:
                total += os.lstat(os.path.join(dirpath, f)).st_size
            except OSError:
                pass
    return total


def apply(result: dict, site: Path, venv: Path) -> None:
    for f in sorted(result["remove"]):
        if f.is_file() or f.is_symlink():
            f.unlink()
        if f.suffix == ".py":
            for pyc in (f.parent / "__pycache__").glob(f"{f.stem}.*.pyc"):
                pyc.unlink()
    for folder in result["test_dirs"]:
        shutil.rmtree(folder, ignore_errors=True)
    for pip in (venv / "bin").glob("pip*"):
        pip.unlink()
    # folders left empty (or with an emptied __pycache__ only)
    for dirpath, dirnames, files in os.walk(site, topdown=False):
        here = Path(dirpath)
        if here == site or here.name.endswith(".dist-info"):
            continue
        left = list(here.iterdir())
        if all(p.name == "__pycache__" and p.is_dir() and not any(p.iterdir())
               for p in left):
            for p in left:
                p.rmdir()
            here.rmdir()


def site_packages() -> Path:
    return Path(sysconfig.get_paths()["purelib"])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true", help="only say what would go")
    parser.add_argument("--site", type=Path, help="site-packages (default: this python's)")
    args = parser.parse_args(argv)
    site = (args.site or site_packages()).resolve()
    venv = Path(sys.prefix).resolve() if args.site is None else site.parents[2]
    if not (site / "trove").is_dir():
        print(f"prune: no trove package in {site}", file=sys.stderr)
        return 1
    before = du(venv)
    result = plan(site, venv)
    names = ", ".join(d.name for d in result["pruned"])
    print(f"prune: {len(result['closure'])} modules in the agent's import closure; "
          f"{len(result['kept'])} of {len(result['dists'])} distributions kept")
    print(f"prune: {len(result['pruned'])} distributions pruned: {names}")
    print(f"prune: {len(result['test_dirs'])} test packages pruned")
    if args.dry_run:
        return 0
    apply(result, site, venv)
    after = du(venv)
    print(f"prune: {venv}: {before:,} bytes before, {after:,} after "
          f"({(before - after) * 100 // max(before, 1)}% less)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
