"""The manifest's sizes section (build/sizes.py), read from a fake root
tree, and `inspect` (build/report.py) on a manifest written here."""
import contextlib
import json
import os
from pathlib import Path

import pytest

from trove_image_builder import profile as profiles
from trove_image_builder.build import manifest as manifest_mod, sizes, stage as build_mod
from trove_image_builder.build.contents import dpkg_installed_sizes, dpkg_packages
from trove_image_builder.contract import paths as contract_paths

from tests.helpers.cli import assert_error, invoke as run

MIB = 2 ** 20

STATUS = """\
Package: big-server
Status: install ok installed
Installed-Size: 20480
Version: 1.0-1

Package: small-tool
Status: install ok installed
Installed-Size: 12
Description: a multi-line
 description: with a colon
Version: 2.0

Package: gone
Status: deinstall ok config-files
Installed-Size: 99999
Version: 0.1

Package: no-size
Status: install ok installed
Version: 3
"""


def used(*paths: Path) -> int:
    """Disk usage of these paths themselves (not what is under them)."""
    return sum(os.lstat(p).st_blocks * 512 for p in paths)


def write(path: Path, size: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x" * size)
    return path


@pytest.fixture
def root(tmp_path) -> Path:
    """A fake image root: dpkg status, an agent venv, preloaded images, a
    kernel with its modules, /lib a link to /usr/lib as on merged-/usr."""
    r = tmp_path / "root"
    paths = contract_paths.current()
    write(r / "var/lib/dpkg/status", 0).write_text(STATUS)
    venv = r / paths.agent_venv.lstrip("/")
    site = venv / "lib/python3.13/site-packages"
    write(site / "bigdist/__init__.py", 300_000)
    write(site / "bigdist/data.bin", 200_000)
    write(site / "smalldist.py", 10_000)
    write(site / "bigdist-1.0.dist-info/METADATA", 100).write_text(
        "Name: bigdist\nVersion: 1.0\n")
    write(venv / "bin/activate", 5_000)
    (venv / "bin/python3").symlink_to("/usr/bin/python3")     # never followed
    images = r / paths.images.lstrip("/")
    write(images / "image-00.tar", 3 * MIB)
    write(images / "image-01.tar", 1 * MIB)
    write(images / "images.list", 0).write_text("a:1 image-00.tar sha256:x\n")
    write(r / "boot/vmlinuz-6.1.0-amd64", 400_000)
    write(r / "boot/initrd.img-6.1.0-amd64", 700_000)
    write(r / "boot/config-6.1.0-amd64", 1_000)
    (r / "boot/vmlinuz").symlink_to("vmlinuz-6.1.0-amd64")
    write(r / "usr/lib/modules/6.1.0-amd64/kernel/fs/ext4.ko", 250_000)
    write(r / "usr/lib/modules/6.1.0-amd64/modules.dep", 1_000)
    (r / "lib").symlink_to("usr/lib")
    (r / "etc").mkdir()
    return r


# --------------------------------------------------------------------------
# disk usage

def test_disk_usage_counts_blocks_of_everything_under_a_folder(tmp_path):
    a = write(tmp_path / "d/a", 5000)
    b = write(tmp_path / "d/sub/b", 70_000)
    assert sizes.disk_usage(tmp_path / "d") == used(tmp_path / "d", tmp_path / "d/sub", a, b)
    assert sizes.disk_usage(a) == used(a) >= 5000
    assert sizes.disk_usage(tmp_path / "missing") == 0


def test_disk_usage_does_not_follow_symlinks(tmp_path):
    big = write(tmp_path / "elsewhere/big", 2 * MIB)
    (tmp_path / "d").mkdir()
    (tmp_path / "d/link").symlink_to(big)
    (tmp_path / "d/dirlink").symlink_to(big.parent)
    assert sizes.disk_usage(tmp_path / "d") < MIB
    assert sizes.disk_usage(tmp_path / "d/dirlink") < MIB


def test_disk_usage_counts_a_hard_linked_file_once(tmp_path):
    a = write(tmp_path / "d/a", 100_000)
    os.link(a, tmp_path / "d/b")
    assert sizes.disk_usage(tmp_path / "d") == used(tmp_path / "d", a)


def test_disk_usage_is_real_usage_not_apparent_size(tmp_path):
    sparse = tmp_path / "sparse"
    with sparse.open("wb") as f:
        f.truncate(64 * MIB)
    assert sizes.disk_usage(sparse) < MIB


def test_disk_usage_stays_on_its_file_system(tmp_path, monkeypatch):
    write(tmp_path / "d/here", 100_000)
    write(tmp_path / "d/mnt/there", 3 * MIB)
    real_scandir = os.scandir
    mnt = str(tmp_path / "d/mnt")

    class Other:
        """A directory entry on another device (a mount point)."""
        def __init__(self, entry):
            self.entry, self.path, self.name = entry, entry.path, entry.name

        def stat(self, follow_symlinks=True):
            st = self.entry.stat(follow_symlinks=follow_symlinks)
            return os.stat_result((st.st_mode, st.st_ino, st.st_dev + 1, *st[3:]))

        def is_dir(self, follow_symlinks=True):
            return self.entry.is_dir(follow_symlinks=follow_symlinks)

    def scandir(path):
        return [Other(e) if e.path == mnt else e for e in real_scandir(path)]
    monkeypatch.setattr(sizes.os, "scandir", scandir)
    assert sizes.disk_usage(tmp_path / "d") < MIB


# --------------------------------------------------------------------------
# the sections

def test_dpkg_installed_sizes_are_bytes_of_installed_packages(root):
    assert dpkg_installed_sizes(root) == {"big-server": 20480 * 1024, "no-size": 0,
                                          "small-tool": 12 * 1024}
    # the versions, read by the same parser, as before
    assert dpkg_packages(root) == {"big-server": "1.0-1", "no-size": "3",
                                   "small-tool": "2.0"}


def test_packages_section(root):
    assert sizes.packages(root, top=2) == {
        "count": 3, "total_bytes": (20480 + 12) * 1024,
        "top": [{"name": "big-server", "bytes": 20480 * 1024},
                {"name": "small-tool", "bytes": 12 * 1024}]}
    assert sizes.packages(root.parent / "nothing") == {"count": 0, "total_bytes": 0, "top": []}


def test_agent_venv_section(root):
    venv = contract_paths.current().agent_venv
    found = sizes.agent_venv(root, venv)
    site = root / venv.lstrip("/") / "lib/python3.13/site-packages"
    assert found["path"] == venv
    assert found["total_bytes"] == sizes.disk_usage(root / venv.lstrip("/"))
    assert [e["name"] for e in found["top"]] == ["bigdist", "smalldist.py",
                                                 "bigdist-1.0.dist-info"]
    assert found["top"][0]["bytes"] == sizes.disk_usage(site / "bigdist") >= 500_000
    assert found["site_packages_bytes"] == sum(e["bytes"] for e in found["top"])
    assert found["total_bytes"] > found["site_packages_bytes"]
    assert [e["name"] for e in sizes.agent_venv(root, venv, top=1)["top"]] == ["bigdist"]
    assert sizes.agent_venv(root, "/opt/none") is None


def test_preloaded_images_section(root):
    folder = contract_paths.current().images
    found = sizes.preloaded_images(root, folder)
    assert [f["name"] for f in found["files"]] == ["image-00.tar", "image-01.tar",
                                                   "images.list"]
    assert found["files"][0]["bytes"] >= 3 * MIB
    assert found["total_bytes"] == sum(f["bytes"] for f in found["files"])
    assert found["path"] == folder
    assert sizes.preloaded_images(root, "/var/lib/none") is None


def test_kernel_section_counts_modules_once_on_merged_usr(root):
    found = sizes.kernel(root)
    names = [f["name"] for f in found["files"]]
    assert sorted(names) == ["boot/initrd.img-6.1.0-amd64", "boot/vmlinuz-6.1.0-amd64",
                             "usr/lib/modules/6.1.0-amd64"]
    assert found["total_bytes"] == sum(f["bytes"] for f in found["files"]) >= 1_350_000


def test_kernel_section_reads_lib_modules_when_it_is_its_own_folder(tmp_path):
    write(tmp_path / "lib/modules/5.10.0/kernel/a.ko", 80_000)
    found = sizes.kernel(tmp_path)
    assert [f["name"] for f in found["files"]] == ["lib/modules/5.10.0"]
    assert sizes.kernel(tmp_path / "empty") == {"total_bytes": 0, "files": []}


def test_image_sizes_has_every_section(root):
    found = sizes.image_sizes(root, contract_paths.current(), 123)
    assert found["image_bytes"] == 123
    assert set(found) == {"image_bytes", "filesystem", "kernel", "agent_venv",
                          "preloaded_images", "packages"}
    fs = found["filesystem"]
    assert fs["files_bytes"] == sizes.disk_usage(root)
    assert fs["files_bytes"] > found["agent_venv"]["total_bytes"] + \
        found["preloaded_images"]["total_bytes"]
    assert 0 < fs["used_bytes"] <= fs["size_bytes"]
    json.dumps(found)       # it goes into the manifest as it is


def test_read_contents_records_the_sizes(root, tmp_path, monkeypatch):
    image = write(tmp_path / "x.qcow2", 4096)

    @contextlib.contextmanager
    def mounted(path):
        assert path == image
        yield root
    monkeypatch.setattr(manifest_mod.imagefs, "mounted", mounted)
    plan = build_mod.plan_for(profiles.load("prod-mariadb"), image)
    found = manifest_mod.read_contents(image, plan)["sizes"]
    assert found["image_bytes"] == 4096
    assert found["packages"]["count"] == 3
    assert found["preloaded_images"]["files"][0]["name"] == "image-00.tar"


# --------------------------------------------------------------------------
# inspect

@pytest.fixture
def image(root, tmp_path) -> Path:
    """An image file, and its manifest with a sizes section read from root."""
    path = write(tmp_path / "out/prod-mariadb.qcow2", 1000)
    manifest = {
        "schema": 2, "built_at": "2026-01-02T03:04:05+00:00",
        "image": {"file": path.name, "format": "qcow2", "size_bytes": 600 * MIB,
                  "virtual_size_bytes": 4096 * MIB, "sha256": "0" * 64},
        "profile": {"name": "prod-mariadb", "variant": "production"},
        "os": {"distro": "debian", "release": "trixie",
               "os_release": {"PRETTY_NAME": "Debian GNU/Linux 13 (trixie)"}},
        "packages": {"big-server": "1.0-1", "docker.io": "26.1", "small-tool": "2.0"},
        "guest_agent": {"version": "26.0.0"},
        "datastore": {"name": "mariadb", "version": "11.8", "runtime": "container"},
        "sizes": sizes.image_sizes(root, contract_paths.current(), 600 * MIB),
    }
    path.with_name(path.name + ".manifest.json").write_text(json.dumps(manifest))
    return path


def manifest_of(image: Path) -> dict:
    return json.loads(image.with_name(image.name + ".manifest.json").read_text())


def test_inspect_prints_a_summary(image):
    result = run("inspect", str(image))
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [
        "profile        prod-mariadb",
        "variant        production",
        "os             Debian GNU/Linux 13 (trixie)",
        "datastore      mariadb 11.8 (container)",
        "agent version  26.0.0",
        "packages       3",
        "image          600.0 MiB",
        "built at       2026-01-02T03:04:05+00:00",
    ]
    summary = json.loads(run("inspect", str(image), "--json").stdout)
    assert summary["packages"] == 3 and summary["image_bytes"] == 600 * MIB


def test_inspect_sizes_prints_the_report(image):
    result = run("inspect", str(image), "--sizes")
    assert result.exit_code == 0, result.output
    out = result.stdout.splitlines()
    by_name = {ln.split()[0]: ln for ln in out if not ln.startswith(" ")}
    assert list(by_name) == ["image", "filesystem", "kernel", "agent", "preloaded",
                             "packages"]
    assert by_name["image"].split()[1:] == ["600.0", "MiB", "prod-mariadb.qcow2",
                                            "(qcow2,", "4,096.0", "MiB", "virtual)"]
    assert "/opt/guest-agent-venv" in by_name["agent"]
    assert "3 installed (dpkg Installed-Size)" in by_name["packages"]
    assert "  big-server" in result.stdout and "20.0 MiB" in result.stdout
    assert "  image-00.tar" in result.stdout and "  bigdist " in result.stdout
    assert "  usr/lib/modules/6.1.0-amd64" in result.stdout
    # one column of sizes, right-aligned
    assert len({ln.index("MiB") for ln in out}) == 1


def test_inspect_sizes_json_is_the_sizes_section(image):
    result = run("inspect", str(image), "--sizes", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == manifest_of(image)["sizes"]


def test_inspect_sizes_says_none_for_a_missing_venv(image):
    manifest = manifest_of(image)
    manifest["sizes"]["agent_venv"] = manifest["sizes"]["preloaded_images"] = None
    image.with_name(image.name + ".manifest.json").write_text(json.dumps(manifest))
    out = run("inspect", str(image), "--sizes").stdout
    assert [ln.split() for ln in out.splitlines() if ln.startswith(("agent", "preloaded"))] \
        == [["agent", "venv", "-", "none", "in", "the", "image"],
            ["preloaded", "images", "-", "none", "in", "the", "image"]]


def test_inspect_sizes_of_an_older_manifest_says_rebuild(image):
    manifest = manifest_of(image)
    del manifest["sizes"]
    path = image.with_name(image.name + ".manifest.json")
    path.write_text(json.dumps(manifest))
    assert_error(run("inspect", str(image), "--sizes"),
                 f"{path} has no sizes section (the image was built before sizes were "
                 "recorded); rebuild the image", exit_code=1)
    # the summary does not need it
    assert run("inspect", str(image)).exit_code == 0


def test_inspect_without_a_manifest(tmp_path):
    image = write(tmp_path / "x.qcow2", 10)
    assert_error(run("inspect", str(image), "--sizes"),
                 f"{image}: no manifest (x.qcow2.manifest.json) next to it")
    assert_error(run("inspect", str(tmp_path / "nope.qcow2")),
                 f"{tmp_path / 'nope.qcow2'}: no such image file")
