"""The host's pip cache in a layer's chroot (build/chroot_layer.py): bound
at /tmp/pip-cache for a layer with the guest agent, unmounted and its mount
point gone afterwards, whatever happened, and never copied into the image."""
from pathlib import Path
import subprocess

import pytest

from trove_image_builder.build import chroot_layer
from trove_image_builder.errors import BuildError


class FakeMounts:
    """mount/umount on a fake root: a bind mount shows the source's files
    at the target (as a symlinked folder would), umount takes them away."""

    def __init__(self):
        self.mounted: dict[Path, Path | None] = {}
        self.calls: list[list[str]] = []

    def run(self, argv, **kwargs):
        argv = [str(a) for a in argv]
        self.calls.append(argv)
        target = Path(argv[-1])
        if argv[0] == "mount":
            source = Path(argv[2]) if argv[1] == "--bind" else None
            self.mounted[target] = source
        elif argv[0] == "umount":
            self.mounted.pop(target, None)
        return subprocess.CompletedProcess(argv, 0, b"", b"")


@pytest.fixture
def fake(tmp_path, monkeypatch):
    mounts = FakeMounts()
    monkeypatch.setattr(chroot_layer.subprocess, "run", mounts.run)
    monkeypatch.setenv("TROVE_IMAGE_BUILDER_CACHE", str(tmp_path / "cache"))
    root = tmp_path / "root"
    for d in ("etc", "usr/sbin", "tmp", "proc", "sys", "dev/pts"):
        (root / d).mkdir(parents=True)
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    (hooks / "run").write_text("#!/bin/sh\n")
    return mounts, root, hooks


def run_layer(monkeypatch, mounts, root, hooks, pip_cache, fail=False):
    seen = {}

    def fake_run_logged(argv, env, logf, what):
        target = root / chroot_layer.PIP_CACHE_IN_TARGET
        seen["bound"] = mounts.mounted.get(target)
        if fail:
            raise BuildError("the elements' phases failed")

    monkeypatch.setattr(chroot_layer, "_run_logged", fake_run_logged)
    chroot_layer._in_chroot(root, hooks, {}, None, "agent", pip_cache=pip_cache)
    return seen


def test_the_agent_layer_gets_the_host_pip_cache(fake, monkeypatch):
    mounts, root, hooks = fake
    seen = run_layer(monkeypatch, mounts, root, hooks, pip_cache=True)
    assert seen["bound"] == chroot_layer.pip_cache_dir()
    assert chroot_layer.pip_cache_dir().is_dir()
    # unmounted, and no mount point left in the image
    assert not mounts.mounted
    assert not (root / "tmp/pip-cache").exists()
    assert ["umount", str(root / "tmp/pip-cache")] in mounts.calls


def test_the_cache_is_unmounted_when_the_layer_fails(fake, monkeypatch):
    mounts, root, hooks = fake
    with pytest.raises(BuildError):
        run_layer(monkeypatch, mounts, root, hooks, pip_cache=True, fail=True)
    assert not mounts.mounted
    assert not (root / "tmp/pip-cache").exists()


def test_a_cache_file_in_the_mount_point_is_not_removed_with_the_cache(fake, monkeypatch):
    """Only an empty mount point is removed: were the unmount to fail, the
    host's cache would not be deleted through it."""
    mounts, root, hooks = fake
    (root / "tmp/pip-cache").mkdir()
    (root / "tmp/pip-cache/left").write_text("x")
    run_layer(monkeypatch, mounts, root, hooks, pip_cache=True)
    assert (root / "tmp/pip-cache/left").exists()


def test_other_layers_get_no_pip_cache(fake, monkeypatch):
    mounts, root, hooks = fake
    seen = run_layer(monkeypatch, mounts, root, hooks, pip_cache=False)
    assert seen["bound"] is None
    assert not any("pip-cache" in " ".join(c) for c in mounts.calls)
