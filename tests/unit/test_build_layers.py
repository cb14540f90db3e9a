"""Layered builds: which element goes to which layer, what a layer's key
covers, what the cache reuses and why, and the chain made into one image
(with a backend of the tests' own that writes a real qcow2, and the chroot
step replaced by a recorder)."""
import json
import os
from pathlib import Path
import shutil
import subprocess
import textwrap
import time

import pytest

from tests.helpers.cli import assert_error, invoke
from trove_image_builder import elements, profile as profiles
from trove_image_builder.build import backends, chroot_layer, layered, layers, stage
from trove_image_builder.build.backends.base import Backend
from trove_image_builder.build.cache import Entry, LayerCache, parse_size
from trove_image_builder.errors import InputError


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TROVE_IMAGE_BUILDER_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("TROVE_IMAGE_BUILDER_CACHE_MAX", raising=False)
    monkeypatch.delenv("TROVE_IMAGE_BUILDER_LAYER_MAX_AGE", raising=False)
    return tmp_path / "cache"


def plan_of(name, sets=(), extra=()):
    known = elements.discover(extra)
    prof = profiles.load(name, sets, known_elements=known)
    return stage.plan_for(prof, None, extra, known)


@pytest.fixture
def trove_tree(tmp_path):
    tree = tmp_path / "trove"
    (tree / "trove").mkdir(parents=True)
    (tree / "setup.cfg").write_text("[metadata]\nname = trove\n")
    (tree / "trove" / "agent.py").write_text("VERSION = 1\n")
    return tree


def by_name(layering):
    return {layer.name: layer for layer in layering.layers}


# -- which element goes where ----------------------------------------------

def test_the_agent_and_the_certificate_hook_sit_above_the_base():
    got = by_name(layers.plan_layers(plan_of("prod-mariadb")))
    assert got["agent"].elements == ("guest-agent",)
    assert got["rest"].elements == ("trove-certs",)
    base = got["base"].elements
    assert {"mariadb", "container-engine", "trove-guest", "vm"} <= set(base)
    assert "guest-agent" not in base and "trove-certs" not in base
    assert set(layers.HELPERS) <= set(base)


def test_an_agentless_image_is_one_base_layer():
    got = layers.plan_layers(plan_of("mariadb-package"))
    assert [layer.name for layer in got.layers] == ["base"]


def _user_element(root: Path, name: str, files: dict) -> Path:
    folder = root / name
    for rel, text in files.items():
        path = folder / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        if ".d/" in rel:
            path.chmod(0o755)
    return folder


def test_a_users_element_goes_to_the_top_layer_unless_it_needs_dib(tmp_path, write):
    extra = tmp_path / "mine"
    _user_element(extra, "motd", {"install.d/50-motd": "#!/bin/bash\necho hi > /etc/motd\n",
                                  "element-deps": "trove-guest\n"})
    _user_element(extra, "rooty", {"root.d/10-x": "#!/bin/bash\ntrue\n"})
    _user_element(extra, "needy", {"install.d/10-x": "#!/bin/bash\ntrue\n",
                                   "element-deps": "growvols\n"})
    write("p.yaml", """
        extends: prod-mariadb
        name: mine
        elements: [motd, rooty, needy]
    """)
    got = layers.plan_layers(plan_of("p.yaml", extra=[str(extra)]))
    named = by_name(got)
    assert named["rest"].elements == ("trove-certs", "motd")
    assert {"rooty", "needy"} <= set(named["base"].elements)
    assert any("rooty" in n and "root.d" in n for n in got.notes)
    assert any("needy" in n and "growvols" in n for n in got.notes)


# -- what a key covers -----------------------------------------------------

def test_production_and_development_images_share_their_base(trove_tree):
    prod = by_name(layers.plan_layers(plan_of("prod-mariadb")))
    dev = by_name(layers.plan_layers(plan_of("dev-mariadb", [f"trove_source={trove_tree}"])))
    assert prod["base"].key == dev["base"].key
    assert prod["agent"].key != dev["agent"].key


def test_each_backend_stands_on_its_own_base():
    dib = by_name(layers.plan_layers(plan_of("prod-mariadb"), backend="dib"))
    vc = by_name(layers.plan_layers(plan_of("prod-mariadb"), backend="virt-customize"))
    assert dib["base"].key != vc["base"].key
    assert dib["agent"].key != vc["agent"].key


def test_a_new_agent_version_changes_the_agent_layer_and_above_only():
    a = by_name(layers.plan_layers(plan_of("prod-mariadb")))
    b = by_name(layers.plan_layers(plan_of("prod-mariadb", ["guest_agent.version=25.0.0"])))
    assert a["base"].key == b["base"].key
    assert a["agent"].key != b["agent"].key
    assert a["rest"].key != b["rest"].key       # built on another agent layer


def test_the_datastore_version_changes_the_base():
    a = by_name(layers.plan_layers(plan_of("prod-mariadb")))
    b = by_name(layers.plan_layers(plan_of("prod-mariadb", ["datastore.version=11.4",
                                                            "datastore.image=pull"])))
    assert a["base"].key != b["base"].key


def test_a_source_tree_counts_by_its_content_not_its_path(trove_tree, tmp_path):
    key = by_name(layers.plan_layers(plan_of(
        "dev-mariadb", [f"trove_source={trove_tree}"])))["agent"].inputs
    moved = tmp_path / "elsewhere"
    shutil.copytree(trove_tree, moved)
    same = by_name(layers.plan_layers(plan_of(
        "dev-mariadb", [f"trove_source={moved}"])))["agent"].inputs
    assert key == same
    (moved / "trove" / "agent.py").write_text("VERSION = 2\n")
    (moved / "trove" / "__pycache__").mkdir()
    changed = by_name(layers.plan_layers(plan_of(
        "dev-mariadb", [f"trove_source={moved}"])))["agent"].inputs
    assert changed["env TROVE_GUEST_AGENT_SOURCE"] != key["env TROVE_GUEST_AGENT_SOURCE"]


def test_caches_and_bytecode_do_not_count(trove_tree):
    before = layers.files_digest(trove_tree)
    (trove_tree / ".tox").mkdir()
    (trove_tree / ".tox" / "x").write_text("x")
    (trove_tree / "trove" / "agent.pyc").write_bytes(b"\0")
    assert layers.files_digest(trove_tree) == before
    (trove_tree / "trove" / "agent.py").chmod(0o755)
    assert layers.files_digest(trove_tree) != before


def test_a_development_images_top_layer_is_never_stored(trove_tree):
    got = by_name(layers.plan_layers(plan_of("dev-mariadb", [f"trove_source={trove_tree}"])))
    assert got["agent"].cacheable
    assert not got["rest"].cacheable
    assert "dev-access" in got["rest"].elements


def test_the_base_is_built_from_its_own_elements_and_variables_uncompressed():
    plan = plan_of("prod-mariadb")
    base = by_name(layers.plan_layers(plan))["base"]
    sub = layers.base_plan(plan, base)
    assert sub.elements == base.elements
    assert not any(k.startswith(("TROVE_GUEST_AGENT_", "TROVE_CERTS_")) for k in sub.env)
    assert (sub.profile.image.format, sub.profile.image.compression) == ("qcow2", "none")


# -- the cache -------------------------------------------------------------

def _entry(cache: LayerCache, kind, key, size=1 << 20, below=None, used=None):
    staged = cache.staging(kind, key)
    with open(staged, "wb") as fh:
        fh.write(os.urandom(size))
    meta = {"below": below, "below_file": f"base-{below}.qcow2" if below else None}
    entry = cache.store(kind, key, staged, {k: v for k, v in meta.items() if v})
    if used is not None:
        entry = Entry(kind, key, entry.path, {**entry.meta, "last_used": used})
        (entry.path.parent / (entry.path.name + ".json")).write_text(json.dumps(entry.meta))
    return entry


def test_an_entry_goes_with_what_was_built_on_it(tmp_path):
    cache = LayerCache(tmp_path / "layers")
    base = _entry(cache, "base", "b1")
    _entry(cache, "agent", "a1", below="b1")
    _entry(cache, "base", "b2")
    gone = cache.remove(base)
    assert sorted(e.key for e in gone) == ["a1", "b1"]
    assert [e.key for e in cache.entries()] == ["b2"]


def test_an_overlay_whose_base_is_gone_is_not_found(tmp_path):
    cache = LayerCache(tmp_path / "layers")
    _entry(cache, "base", "b1")
    _entry(cache, "agent", "a1", below="b1")
    cache.path_for("base", "b1").unlink()
    assert cache.lookup("agent", "a1") is None


def test_eviction_removes_the_least_recently_used_first_and_keeps_what_is_in_use(tmp_path):
    cache = LayerCache(tmp_path / "layers")
    now = time.time()
    _entry(cache, "base", "old", used=now - 100)
    _entry(cache, "base", "mid", used=now - 50)
    _entry(cache, "base", "new", used=now)
    removed = cache.evict(2 << 20, keep={"old"})
    assert [e.key for e in removed] == ["mid"]
    assert sorted(e.key for e in cache.entries()) == ["new", "old"]


def test_a_rebuilt_layer_replaces_the_old_one_and_what_stood_on_it(tmp_path):
    cache = LayerCache(tmp_path / "layers")
    _entry(cache, "base", "b1")
    _entry(cache, "agent", "a1", below="b1")
    _entry(cache, "base", "b1")
    assert [e.key for e in cache.entries()] == ["b1"]


@pytest.mark.parametrize("text,size", [("20G", 20 << 30), ("500M", 500 << 20),
                                       ("1.5g", int(1.5 * (1 << 30))), ("10", 10)])
def test_sizes(text, size):
    assert parse_size(text, "x") == size


def test_a_bad_size_is_one_line():
    with pytest.raises(InputError, match="^--max-size: 'lots' is not a size; write it like"):
        parse_size("lots", "--max-size")


# -- reuse and rebuild, and why --------------------------------------------

class QcowBackend(Backend):
    """Writes a real (empty) qcow2 of the plan's size: enough for overlays
    and qemu-img convert."""
    name = "qcow-test"
    tools = ()
    calls: list = []

    def host_checks(self):
        return []

    def describe(self, plan, workdir, cache_dir):
        return []

    def build(self, plan, workdir, cache_dir, log_path, timings):
        type(self).calls.append(plan)
        workdir.mkdir(parents=True, exist_ok=True)
        image = workdir / "image.qcow2"
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(image), "64M"],
                       check=True)
        log_path.write_text("base log\n")
        return image


@pytest.fixture
def chain(monkeypatch, tmp_path):
    """Run layered.build with QcowBackend; the chroot step records which
    layer it applied to which overlay."""
    if shutil.which("qemu-img") is None:
        pytest.skip("qemu-img is not installed")
    applied = []

    def fake_apply(image, layer_name, folders, env_folders, env, workdir, log_path):
        assert image.is_file()
        applied.append((layer_name, tuple(folders)))
    monkeypatch.setattr(chroot_layer, "apply", fake_apply)
    QcowBackend.calls = []

    def go(plan, refresh=False):
        applied.clear()
        QcowBackend.calls.clear()
        work = Path(subprocess.run(["mktemp", "-d", "-p", str(tmp_path)], text=True,
                                   capture_output=True, check=True).stdout.strip())
        layering = layers.plan_layers(plan)
        image, outcomes, whole = layered.build(plan, layering, QcowBackend(), work,
                                               LayerCache(), work / "log", {}, refresh)
        return image, {o.name: o for o in [*outcomes, whole]}, list(applied)
    return go


def test_first_build_makes_every_layer_then_an_unchanged_one_reuses_the_image(chain):
    plan = plan_of("prod-mariadb")
    image, got, applied = chain(plan)
    assert not any(o.reused for o in got.values())
    assert got["base"].reason == "no earlier build of this layer for this profile"
    assert [a[0] for a in applied] == ["agent", "rest"]
    assert len(QcowBackend.calls) == 1
    info = json.loads(subprocess.run(["qemu-img", "info", "--output=json", str(image)],
                                     capture_output=True, text=True, check=True).stdout)
    assert "backing-filename" not in info      # standalone

    image, got, applied = chain(plan)
    assert all(o.reused for o in got.values())
    assert applied == [] and QcowBackend.calls == []


def test_an_agent_change_rebuilds_the_agent_and_above_and_says_why(chain):
    chain(plan_of("prod-mariadb"))
    _, got, applied = chain(plan_of("prod-mariadb", ["guest_agent.version=25.0.0"]))
    assert got["base"].reused and QcowBackend.calls == []
    assert not got["agent"].reused
    assert got["agent"].reason == "env TROVE_GUEST_AGENT_VERSION changed"
    assert got["rest"].reason == "the layer below is rebuilt"
    assert [a[0] for a in applied] == ["agent", "rest"]


def test_refresh_rebuilds_everything(chain):
    plan = plan_of("prod-mariadb")
    chain(plan)
    _, got, _ = chain(plan, refresh=True)
    assert {o.reason for o in got.values()} == {"--refresh"}
    assert not any(o.reused for o in got.values())
    assert len(QcowBackend.calls) == 1


def test_a_layer_older_than_the_maximum_age_is_rebuilt(chain, monkeypatch):
    plan = plan_of("prod-mariadb")
    chain(plan)
    monkeypatch.setenv("TROVE_IMAGE_BUILDER_LAYER_MAX_AGE", "0")
    _, got, _ = chain(plan)
    assert not got["base"].reused
    assert "older than 0 days" in got["base"].reason


def test_a_development_build_reuses_the_base_but_not_its_key_layer(chain, trove_tree):
    chain(plan_of("prod-mariadb"))
    plan = plan_of("dev-mariadb", [f"trove_source={trove_tree}"])
    _, got, applied = chain(plan)
    assert got["base"].reused
    assert not got["rest"].reused and "per-build secret" in got["rest"].reason
    _, got, applied = chain(plan)
    assert got["agent"].reused and not got["rest"].reused
    assert [a[0] for a in applied] == ["rest"]


def test_the_cache_bound_is_kept_after_a_build(chain, monkeypatch):
    chain(plan_of("prod-mariadb"))
    monkeypatch.setenv("TROVE_IMAGE_BUILDER_CACHE_MAX", "1K")
    chain(plan_of("prod-mariadb", ["guest_agent.version=25.0.0"]))
    # only what the last build used is left: one of each
    assert sorted(e.kind for e in LayerCache().entries()) == ["agent", "base", "image", "rest"]


# -- the chroot step's own parts -------------------------------------------

def test_package_installs_follow_when_and_phase(tmp_path):
    folder = _user_element(tmp_path, "e", {"package-installs.yaml": textwrap.dedent("""
        python3-venv:
          when: INSTALL != none
        git:
          when: INSTALL = source
        curl:
          phase: pre-install.d
        jq:
    """)})
    got = chroot_layer.packages_by_phase({"e": folder}, {"INSTALL": "release"})
    assert got == {"install.d": ["python3-venv", "jq"], "pre-install.d": ["curl"]}


def test_package_installs_it_cannot_play_are_refused(tmp_path):
    folder = _user_element(tmp_path, "e", {"package-installs.yaml": "x:\n  uninstall: true\n"})
    with pytest.raises(InputError, match="uninstall is not supported in an upper layer"):
        chroot_layer.packages_by_phase({"e": folder}, {})


def test_the_chroot_program_is_valid_bash_and_runs_phases_in_order(tmp_path):
    text = chroot_layer.target_script({"install.d": ["git"]}, has_static=True)
    script = tmp_path / "run"
    script.write_text(text)
    subprocess.run(["bash", "-n", str(script)], check=True)
    order = [text.index(f"run_phase {p}") for p in chroot_layer.PHASES_IN_TARGET]
    assert order == sorted(order)
    assert text.index("need git") < text.index("run_phase install.d")
    assert text.index("rsync -lCr") < text.index("run_phase install.d")


def test_hooks_are_merged_as_dib_merges_them(tmp_path):
    a = _user_element(tmp_path / "a", "a", {"install.d/10-a": "#!/bin/sh\n",
                                            "static/etc/a": "a"})
    b = _user_element(tmp_path / "b", "b", {"install.d/20-b": "#!/bin/sh\n",
                                            "README.rst": "b"})
    dest = tmp_path / "hooks"
    chroot_layer.merge_hooks({"a": a, "b": b}, dest)
    assert sorted(p.name for p in (dest / "install.d").iterdir()) == ["10-a", "20-b"]
    assert (dest / "static/etc/a").is_file() and not (dest / "README.rst").exists()


# -- the commands ----------------------------------------------------------

def test_build_explain_dry_run_says_what_would_be_rebuilt_and_why():
    result = invoke("build", "prod-mariadb", "--dry-run", "--explain")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].startswith("base   (debian-minimal vm ")
    assert "rebuilt" in lines[0] and "no earlier build" in lines[0]
    assert lines[1].startswith("agent  (guest-agent): rebuilt")
    assert lines[-1].startswith("image : rebuilt")


def test_no_layers_says_so():
    result = invoke("build", "prod-mariadb", "--dry-run", "--explain", "--no-layers")
    assert result.output.strip() == "layers: none (--no-layers: one backend run, nothing reused)"


def test_cache_list_and_clean(own_cache):
    cache = LayerCache()
    _entry(cache, "base", "b1")
    _entry(cache, "agent", "a1", below="b1")
    listed = invoke("cache", "list", "--json")
    assert listed.exit_code == 0
    assert {e["key"] for e in json.loads(listed.output)["entries"]} == {"a1", "b1"}
    cleaned = invoke("cache", "clean", "--all")
    assert cleaned.exit_code == 0
    assert "2 removed; 0 entries" in cleaned.output
    assert LayerCache().entries() == []


def test_cache_clean_with_a_bad_size_is_one_line():
    assert_error(invoke("cache", "clean", "--max-size", "big"),
                 "--max-size: 'big' is not a size; write it like 20G or 500M")


def test_every_backend_says_whether_it_builds_a_base_layer():
    for name in backends.names():
        assert isinstance(backends.backend_class(name).layered, bool)
