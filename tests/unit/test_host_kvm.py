"""The KVM probe (plumbing.host.kvm_status): a host kernel booted under KVM
must reach its panic; qemu aborting, or a kernel that prints nothing, means
TCG. qemu is a stand-in script here."""
import os

import pytest

from trove_image_builder.plumbing import host

PANICS = """#!/bin/sh
for a; do
  case "$a" in file:*) echo "[    0.9] Kernel panic - not syncing: VFS" > "${a#file:}";; esac
done
sleep 30
"""
ABORTS = """#!/bin/sh
echo "qemu-system-x86_64: error: failed to set MSR 0x10a to 0x0" >&2
exit 1
"""
HANGS = "#!/bin/sh\nsleep 30\n"


@pytest.fixture
def kernel(tmp_path):
    path = tmp_path / "vmlinuz-6.1.0-57-amd64"
    path.write_bytes(b"")
    return path


def fake_qemu(tmp_path, script):
    path = tmp_path / "qemu"
    path.write_text(script)
    os.chmod(path, 0o755)
    return str(path)


def test_a_kernel_that_panics_means_kvm_works(tmp_path, kernel):
    assert host._kernel_under_kvm(fake_qemu(tmp_path, PANICS), kernel) == (
        True, "a Linux kernel ran under KVM (vmlinuz-6.1.0-57-amd64)")


def test_qemu_that_aborts_says_why(tmp_path, kernel):
    assert host._kernel_under_kvm(fake_qemu(tmp_path, ABORTS), kernel) == (
        False, "KVM is present but unusable: qemu-system-x86_64: error: failed to set MSR "
               "0x10a to 0x0")


def test_a_kernel_that_prints_nothing_means_tcg(tmp_path, kernel, monkeypatch):
    monkeypatch.setattr(host, "KERNEL_PROBE_SECONDS", 1)
    assert host._kernel_under_kvm(fake_qemu(tmp_path, HANGS), kernel) == (
        False, "KVM is present but unusable: a Linux kernel makes no progress under it "
               "(vmlinuz-6.1.0-57-amd64 printed nothing within 1 s)")


def test_the_answer_is_kept_for_this_boot_and_asked_again_after_a_reboot(
        tmp_path, kernel, monkeypatch):
    probes = []

    def probe(qemu, k):
        probes.append(k)
        return False, "KVM is present but unusable: test"
    monkeypatch.setattr(host, "RUN_DIR", tmp_path / "run")
    monkeypatch.setattr(host, "_probe_kernel", lambda: kernel)
    monkeypatch.setattr(host, "_kernel_under_kvm", probe)
    qemu = fake_qemu(tmp_path, HANGS)
    monkeypatch.setattr(host, "which", lambda tool: qemu)
    monkeypatch.setattr(host.os, "access", lambda path, mode: True)
    monkeypatch.setattr(host, "_boot_id", lambda: "boot-1")
    for _ in range(2):
        host.kvm_status.cache_clear()
        assert host.kvm_status() == (False, "KVM is present but unusable: test")
    assert len(probes) == 1
    monkeypatch.setattr(host, "_boot_id", lambda: "boot-2")
    host.kvm_status.cache_clear()
    host.kvm_status()
    assert len(probes) == 2
    host.kvm_status.cache_clear()
