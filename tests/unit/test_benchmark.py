"""scripts/benchmark.py's pure helpers: ratios, targets, tables, parsing
systemd-analyze. (The measurements themselves are the script's run.)"""
from pathlib import Path

import pytest

from tests.helpers.scripts import load_script

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "benchmark.py"


@pytest.fixture(scope="module")
def bench():
    return load_script(SCRIPT, "tib_benchmark")


SECONDS = {"cold": 400.0, "refresh": 150.0, "unchanged": 10.0, "agent-only": 80.0,
           "plain-dib-cold": 320.0, "plain-dib-warm": 250.0, "plain-dib-defaults": 300.0}


def test_ratios_and_targets_met(bench):
    measured = bench.ratios(SECONDS)
    assert measured["refresh/plain-dib-defaults"] == 0.5
    assert measured["refresh/plain-dib-warm"] == 0.6
    assert measured["unchanged/cold"] == 0.025
    assert measured["agent-only/cold"] == 0.2
    assert measured["cold/plain-dib-cold"] == 1.25
    assert measured["plain-dib-warm/plain-dib-cold"] == 0.781
    assert bench.missed(measured) == []


def test_a_missed_target_is_named(bench):
    measured = bench.ratios(dict(SECONDS, refresh=240.0))
    assert bench.missed(measured) == ["refresh/plain-dib-defaults = 0.800 (target <= 0.75)"]


def test_a_ratio_not_measured_counts_as_missed(bench):
    seconds = {k: v for k, v in SECONDS.items() if k != "plain-dib-defaults"}
    measured = bench.ratios(seconds)
    assert "refresh/plain-dib-defaults" not in measured
    assert bench.missed(measured) == [
        "refresh/plain-dib-defaults: not measured (target <= 0.75)"]


def test_build_table(bench):
    measured = bench.ratios(dict(SECONDS, unchanged=40.0))
    lines = bench.build_table(SECONDS | {"unchanged": 40.0},
                              {"cold": 500 << 20, "plain-dib-cold": 600 << 20},
                              measured, {"cold": {"layer base": 200.0, "total": 400.0}})
    assert lines[0].split() == ["build", "seconds", "qcow2"]
    assert lines[1].split() == ["cold", "400.0", "500", "MiB"]
    assert lines[2].split() == ["refresh", "150.0", "-"]
    assert any(ln.split() == ["unchanged/cold", "0.100", "target", "<=", "0.05", "MISSED"]
               for ln in lines)
    assert any(ln.split() == ["agent-only/cold", "0.200", "target", "<=", "0.30", "ok"]
               for ln in lines)
    assert lines[-2:] == ["cold:", "  layer base 200.0, total 400.0"]


def test_phase_timings_from_a_manifest(bench):
    manifest = {"layers": {"layers": [{"name": "base", "reused": True, "seconds": None},
                                      {"name": "agent", "reused": False, "seconds": 24.2}]},
                "timings": {"layer.agent": 24.2, "layer.convert": 8.3, "total": 40.1}}
    assert bench.phase_timings(manifest) == {
        "layer base": "reused", "layer agent": 24.2, "layer.agent": 24.2,
        "layer.convert": 8.3, "total": 40.1}
    assert bench.phase_timings({"timings": {"total": 3.0}}) == {"total": 3.0}


def test_build_steps(bench, tmp_path):
    steps = bench.build_steps(["tib", "build", "p"], tmp_path, "25.1.0")
    assert list(steps) == ["cold", "refresh", "unchanged", "agent-only"]
    assert steps["cold"] == ["tib", "build", "p", "-o", str(tmp_path / "cold.qcow2")]
    assert steps["refresh"][-1] == "--refresh"
    assert steps["agent-only"][-2:] == ["--set", "guest_agent.version=25.1.0"]


def test_leftovers_ignore_the_datastore_images(bench, tmp_path):
    assert bench.leftovers(tmp_path / "none") == []
    (tmp_path / "datastore-images").mkdir()
    assert bench.leftovers(tmp_path) == []
    (tmp_path / "layers").mkdir()
    assert bench.leftovers(tmp_path) == ["layers"]


@pytest.mark.parametrize("span, seconds", [
    ("987ms", 0.987), ("2.5s", 2.5), ("1min 3.207s", 63.207), ("1h 2min 3s", 3723.0),
    ("750us", 0.001)])
def test_systemd_seconds(bench, span, seconds):
    assert bench.systemd_seconds(span) == seconds


def test_parse_startup(bench):
    text = ("Startup finished in 3.104s (kernel) + 8.455s (initrd) + 1min 12.880s "
            "(userspace) = 1min 24.440s\n"
            "multi-user.target reached after 1min 12.801s in userspace.\n")
    assert bench.parse_startup(text) == {"kernel": 3.104, "initrd": 8.455,
                                         "userspace": 72.88, "total": 84.44}
    assert bench.parse_startup("Bootup is not yet finished.") == {}


def test_boot_table(bench):
    results = [{"image": "prod.qcow2",
                "seconds": {"kernel": 12.0, "agent_unit_started": 70.1, "agent_queue": 101.0,
                            "rpc_ping": 102.5, "sshd_banner": 60.0, "ssh_login": 95.3},
                "analyze": "Startup finished in 1s (kernel) = 1s",
                "blame": "30.1s docker.service\n5s cloud-init.service",
                "critical_chain": "guest-agent.service +1s"},
               {"image": "other.qcow2", "seconds": {"ssh_login": 90.0},
                "error": "no answer"}]
    lines = bench.boot_table(results)
    assert lines[0].split() == ["image", "to", "kernel", "agent", "unit", "agent", "queue",
                                "rpc_ping", "sshd", "ssh+cloud-init"]
    assert lines[2].split() == ["prod.qcow2", "12.0", "70.1", "101.0", "102.5", "60.0",
                                "95.3"]
    assert lines[3].split() == ["other.qcow2", "-", "-", "-", "-", "-", "90.0"]
    assert "  blame:" in lines and "    30.1s docker.service" in lines
    assert "  error: no answer" in lines


def test_dry_run_prints_both_plain_runs_on_one_dib_cache(bench, tmp_path, capsys,
                                                         monkeypatch):
    monkeypatch.setenv("TROVE_IMAGE_BUILDER_CACHE", str(tmp_path / "user-cache"))
    assert bench.main(["--dry-run", "--workdir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    cache = tmp_path / "plain-dib-cache" / "dib"
    assert f"# plain-dib-cold (DIB_IMAGE_CACHE={cache})" in out
    assert f"# plain-dib-warm (DIB_IMAGE_CACHE={cache})" in out
    # DIB's defaults: no bootstrap tarball cache, DIB's own compression
    defaults = out.split("# plain-dib-defaults", 1)[1]
    assert "compression_type=zstd" not in defaults and "--qemu-img-options" not in defaults
    assert "--refresh" in out


def test_a_cold_build_needs_empty_caches(bench, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("TROVE_IMAGE_BUILDER_CACHE", str(tmp_path / "user-cache"))
    (tmp_path / "cache" / "layers").mkdir(parents=True)
    assert bench.main(["--workdir", str(tmp_path)]) == 2
    assert "the cold builds need empty caches" in capsys.readouterr().err


def test_boot_of_a_missing_image(bench, tmp_path, capsys):
    assert bench.main(["--boot", str(tmp_path / "x.qcow2")]) == 2
    assert "no such image file" in capsys.readouterr().err


def test_booted_calls_on_power_on_before_waiting_for_ssh(monkeypatch, tmp_path):
    """vm.boot.booted's on_power_on (the benchmark's hook): called with the
    Guest once qemu has started, before ssh is waited for."""
    from trove_image_builder.vm import boot
    calls = []
    guest = boot.Guest(2222, "trove", tmp_path / "key", tmp_path / "console", tmp_path,
                       "id", "tcg")
    monkeypatch.setattr(boot, "check_tools", lambda forwards=(): None)
    monkeypatch.setattr(boot.host, "accelerator", lambda: "tcg")
    monkeypatch.setattr(boot, "prepare_machine", lambda *a, **k: (guest, ["qemu"]))
    monkeypatch.setattr(boot, "start_qemu", lambda g, argv: calls.append("qemu") or "proc")
    monkeypatch.setattr(boot, "wait_until_up", lambda g, timeout: calls.append("ssh"))
    monkeypatch.setattr(boot, "stop", lambda proc: calls.append("stop"))
    with boot.booted(tmp_path / "x.qcow2", "trove",
                     on_power_on=lambda g: calls.append(("power-on", g))) as got:
        assert got is guest
    assert calls == ["qemu", ("power-on", guest), "ssh", "stop"]
