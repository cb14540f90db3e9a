"""Benchmark what the closing note needs, in one run.

Build (the default), with a cache of its own:

  cold            a build of the profile with nothing cached (no layer, no
                  DIB cache, no pip cache; the datastore image is made first,
                  untimed, or taken from the user's cache)
  refresh         build --refresh: every layer rebuilt, the host-side
                  package caches (DIB's apt and debootstrap caches, the pip
                  wheel cache) warm from the cold build
  unchanged       the same build again (layers reused)
  agent-only      another guest agent release (--agent-version): the base
                  layer is reused, the agent layer and above are rebuilt
  plain-dib-cold  disk-image-create with the same elements and variables as
                  the plan, and a DIB cache folder of its own, empty
  plain-dib-warm  the same again, with the cache folder the cold run left
                  (DIB "run once before")
  plain-dib-defaults  the same elements on that warm cache with DIB's own
                  defaults: without the profile's speed settings (the
                  bootstrap tarball cache, zstd compression: DEFAULTS_OFF)

  targets: refresh/plain-dib-defaults <= 0.75 (the issue's measure),
           unchanged/cold <= 0.05, agent-only/cold <= 0.30;
           refresh/plain-dib-warm is shown (the same comparison against a
           DIB given the profile's own speed settings)

Boot (--boot IMAGE, repeatable): each image booted under qemu (TCG here)
on a throwaway overlay, with what Trove injects and a RabbitMQ of our own
forwarded to it; from power-on, a thread polls the broker for the agent's
queue and then calls rpc_ping. Reported: power-on to the kernel (estimated
from the guest's uptime), to the agent's unit started, to its queue, to the
first rpc_ping answer, to sshd's banner, to an ssh login with cloud-init
done; then systemd-analyze, its blame and the agent unit's critical chain.

Prints a table, then one JSON line. Exit code 1 when a target is missed (or
a booted agent never answered), 2 when something could not be measured."""
import argparse
import dataclasses
import json
import os
from pathlib import Path
import re
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time

from trove_image_builder import elements, profile as profiles
from trove_image_builder.build import stage as build
from trove_image_builder.build.backends.dib import DibBackend
from trove_image_builder.build.cache import cache_dir
from trove_image_builder.plumbing.cleanup import release_workdir

# (numerator, denominator): target
TARGETS = {("refresh", "plain-dib-defaults"): 0.75,
           ("unchanged", "cold"): 0.05,
           ("agent-only", "cold"): 0.30}
# shown, no target
INFO_RATIOS = (("refresh", "plain-dib-warm"), ("cold", "plain-dib-cold"),
               ("plain-dib-warm", "plain-dib-cold"), ("refresh", "cold"))
BUILDS = ("cold", "refresh", "unchanged", "agent-only")
PLAIN = ("plain-dib-cold", "plain-dib-warm", "plain-dib-defaults")
# The profile's settings that speed DIB up beyond its own defaults, off in
# the plain-dib-defaults run: DIB's debootstrap tarball cache, and the qcow2
# compression (DIB's default is qemu-img's, zlib).
DEFAULTS_OFF = ("DIB_DEBOOTSTRAP_CACHE", "DIB_DEBIAN_USE_DEBOOTSTRAP_CACHE")
OUTPUT = {"cold": "cold", "refresh": "refresh", "unchanged": "unchanged",
          "agent-only": "agent", "plain-dib-cold": "plain-dib-cold",
          "plain-dib-warm": "plain-dib-warm", "plain-dib-defaults": "plain-dib-defaults"}
AGENT_DEADLINE = 900
ANALYZE_WAIT = 300
BLAME_LINES = 15


class BenchError(Exception):
    """Something could not be measured."""


# --------------------------------------------------------------------------
# pure helpers (tests/unit/test_benchmark.py)

def ratio_name(num: str, den: str) -> str:
    return f"{num}/{den}"


def ratios(seconds: dict) -> dict:
    """Every ratio of TARGETS and INFO_RATIOS whose two times were measured."""
    out = {}
    for num, den in [*TARGETS, *INFO_RATIOS]:
        if seconds.get(num) is not None and seconds.get(den):
            out[ratio_name(num, den)] = round(seconds[num] / seconds[den], 3)
    return out


def missed(measured: dict) -> list:
    """The targets missed, or not measured at all, as lines."""
    out = []
    for (num, den), limit in TARGETS.items():
        name = ratio_name(num, den)
        value = measured.get(name)
        if value is None:
            out.append(f"{name}: not measured (target <= {limit})")
        elif value > limit:
            out.append(f"{name} = {value:.3f} (target <= {limit})")
    return out


def mib(size_bytes) -> str:
    return "-" if size_bytes is None else f"{size_bytes / (1 << 20):.0f} MiB"


def phase_timings(manifest: dict) -> dict:
    """A build's seconds from its manifest: each layer (or 'reused'), then
    every entry of its timings section, in the order recorded."""
    report = manifest.get("layers") or {}
    out = {f"layer {o['name']}": ("reused" if o["reused"] else o["seconds"])
           for o in report.get("layers", [])}
    out.update(manifest.get("timings") or {})
    return out


def build_table(seconds: dict, sizes: dict, measured: dict, phases: dict) -> list:
    """The build benchmark's table, as lines."""
    lines = [f"{'build':16}{'seconds':>9}  {'qcow2':>9}"]
    for name in (*BUILDS, *PLAIN):
        if name in seconds:
            lines.append(f"{name:16}{seconds[name]:9.1f}  {mib(sizes.get(name)):>9}")
    lines.append("")
    for (num, den), limit in TARGETS.items():
        value = measured.get(ratio_name(num, den))
        shown = "-" if value is None else f"{value:.3f}"
        verdict = "-" if value is None else ("ok" if value <= limit else "MISSED")
        lines.append(f"{ratio_name(num, den):30}{shown:>7}  target <= {limit:.2f}  {verdict}")
    for num, den in INFO_RATIOS:
        value = measured.get(ratio_name(num, den))
        if value is not None:
            lines.append(f"{ratio_name(num, den):30}{value:7.3f}")
    for name, split in phases.items():
        lines.append("")
        lines.append(f"{name}:")
        lines.append("  " + ", ".join(f"{k} {v}" for k, v in split.items()))
    return lines


_SPAN = re.compile(r"(\d+(?:\.\d+)?)(h|min|ms|us|µs|s)\b")
_UNITS = {"h": 3600, "min": 60, "s": 1, "ms": 1e-3, "us": 1e-6, "µs": 1e-6}


def systemd_seconds(span: str) -> float:
    """A systemd time span ('1min 3.207s', '987ms') in seconds."""
    return round(sum(float(n) * _UNITS[u] for n, u in _SPAN.findall(span)), 3)


def parse_startup(text: str) -> dict:
    """systemd-analyze's 'Startup finished in 1.2s (kernel) + 3.4s (initrd)
    + 1min 5s (userspace) = 1min 9.6s' as {'kernel': 1.2, ..., 'total': 69.6}."""
    line = next((ln for ln in text.splitlines() if ln.startswith("Startup finished in ")), "")
    if not line:
        return {}
    head, _, total = line[len("Startup finished in "):].partition(" = ")
    out = {}
    for part in head.split(" + "):
        m = re.match(r"(.+?) \((\w+)\)$", part.strip())
        if m:
            out[m.group(2)] = systemd_seconds(m.group(1))
    if total:
        out["total"] = systemd_seconds(total)
    return out


BOOT_COLUMNS = (("kernel", "to kernel"), ("agent_unit_started", "agent unit"),
                ("agent_queue", "agent queue"), ("rpc_ping", "rpc_ping"),
                ("sshd_banner", "sshd"), ("ssh_login", "ssh+cloud-init"))


def boot_table(results: list) -> list:
    """The boot benchmark's table (seconds from power-on), then per image
    systemd-analyze, its blame and the agent's critical chain."""
    width = max([len("image"), *(len(r["image"]) for r in results)]) + 2
    lines = [f"{'image':{width}}" + "".join(f"{title:>16}" for _, title in BOOT_COLUMNS),
             f"{'(seconds from power-on)':{width}}"]
    for r in results:
        cells = []
        for key, _ in BOOT_COLUMNS:
            value = r["seconds"].get(key)
            cells.append(f"{'-' if value is None else f'{value:.1f}':>16}")
        lines.append(f"{r['image']:{width}}" + "".join(cells))
    for r in results:
        lines += ["", f"{r['image']}:"]
        if r.get("error"):
            lines.append(f"  error: {r['error']}")
        for title, key in (("systemd-analyze", "analyze"), ("blame", "blame"),
                           ("critical-chain", "critical_chain")):
            text = (r.get(key) or "").rstrip()
            if text:
                lines.append(f"  {title}:")
                lines += ["    " + ln for ln in text.splitlines()]
    return lines


def leftovers(cache: Path) -> list:
    """What in cache would make a 'cold' build warm (all but the datastore
    images, which are an input, not what is timed)."""
    if not cache.is_dir():
        return []
    return sorted(p.name for p in cache.iterdir() if p.name != "datastore-images")


# --------------------------------------------------------------------------
# build

def timed(argv, env, log: Path) -> float:
    start = time.monotonic()
    with open(log, "w") as fh:
        fh.write("# " + shlex.join(str(a) for a in argv) + "\n")
        fh.flush()
        rc = subprocess.run(argv, env=env, stdout=fh, stderr=subprocess.STDOUT).returncode
    elapsed = time.monotonic() - start
    if rc != 0:
        raise BenchError(f"{argv[0]} failed (exit {rc}); log: {log}")
    return round(elapsed, 1)


def build_steps(cli: list, work: Path, agent_version: str) -> dict:
    """Our four builds: name -> argv."""
    out = {name: cli + ["-o", str(work / f"{OUTPUT[name]}.qcow2")] for name in BUILDS}
    out["refresh"].append("--refresh")
    out["agent-only"] += ["--set", f"guest_agent.version={agent_version}"]
    return out


def plain_plan(plan, name: str):
    """The plan a plain run builds: ours, or for plain-dib-defaults without
    the settings in DEFAULTS_OFF and with DIB's default compression."""
    if name != "plain-dib-defaults":
        return plan
    prof = plan.profile
    return dataclasses.replace(
        plan, env={k: v for k, v in plan.env.items() if k not in DEFAULTS_OFF},
        profile=dataclasses.replace(prof, image=dataclasses.replace(
            prof.image, compression="zlib")))


def plain_dib(plan, work: Path, dib_cache: Path, name: str) -> tuple[list, dict, Path]:
    """disk-image-create's argv and environment for one plain run: the plan's
    elements and variables, DIB_IMAGE_CACHE in dib_cache (DibBackend puts it
    at <cache>/dib), a work folder of its own."""
    dib_work = work / name
    argv, dib_env = DibBackend().command(plain_plan(plan, name), dib_work, dib_cache)
    full = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    full.pop("TROVE_IMAGE_BUILDER_CACHE", None)
    full.update(dib_env)
    return argv, full, dib_work


def run_build(args) -> int:
    work = Path(args.workdir or tempfile.mkdtemp(prefix="tib-bench-")).resolve()
    work.mkdir(parents=True, exist_ok=True)
    cache = work / "cache"
    dib_cache = work / "plain-dib-cache"
    for folder, what in ((cache, leftovers(cache)), (dib_cache, leftovers(dib_cache))):
        if what and not args.dry_run:
            raise BenchError(f"{folder} is not empty ({', '.join(what[:5])}): the cold "
                             "builds need empty caches; remove it or choose another --workdir")
    user_cache = cache_dir()
    env = dict(os.environ, TROVE_IMAGE_BUILDER_CACHE=str(cache))
    cli = [sys.executable, "-m", "trove_image_builder.cli", "build", args.profile]
    steps = build_steps(cli, work, args.agent_version)

    known = elements.discover()
    prof = profiles.load(args.profile, known_elements=known)
    preview = build.plan_for(prof, work / "plain.qcow2", known=known)
    build.check_inputs(preview)
    if args.dry_run:
        for name, argv in steps.items():
            print(f"# {name}\nTROVE_IMAGE_BUILDER_CACHE={cache} {shlex.join(argv)}")
        for name in PLAIN:
            _, full, _ = plain_dib(preview, work, dib_cache, name)
            print(f"# {name} (DIB_IMAGE_CACHE={full['DIB_IMAGE_CACHE']})")
            print(DibBackend().describe(plain_plan(preview, name), work / name,
                                        dib_cache)[-1])
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)
        return 0

    # the datastore image (and the other inputs) are inputs of every build
    # here, not what is timed: made once, before, into the benchmark's cache
    os.environ["TROVE_IMAGE_BUILDER_CACHE"] = str(cache)
    if (user_cache / "datastore-images").is_dir() and not (cache / "datastore-images").exists():
        cache.mkdir(parents=True, exist_ok=True)
        shutil.copytree(user_cache / "datastore-images", cache / "datastore-images")
    inputs_dir = work / "plain-inputs"
    inputs_dir.mkdir(exist_ok=True)
    inputs, _ = build._build_inputs(preview, inputs_dir, {})
    plan = build.plan_for(prof, work / "plain.qcow2", known=known, **inputs)

    seconds, sizes, phases = {}, {}, {}
    for name, argv in steps.items():
        print(f"benchmark: {name} build of {args.profile} (cache {cache})", file=sys.stderr)
        seconds[name] = timed(argv, env, work / f"{OUTPUT[name]}.out")
        image = work / f"{OUTPUT[name]}.qcow2"
        manifest = json.loads(image.with_name(image.name + ".manifest.json").read_text())
        sizes[name] = manifest["image"]["size_bytes"]
        phases[name] = phase_timings(manifest)

    fmt = prof.image.format
    for name in PLAIN:
        print(f"benchmark: {name}: disk-image-create, same elements and variables, "
              f"DIB cache {dib_cache / 'dib'}", file=sys.stderr)
        argv, full, dib_work = plain_dib(plan, work, dib_cache, name)
        shutil.rmtree(dib_work, ignore_errors=True)
        (dib_work / "tmp").mkdir(parents=True)
        try:
            seconds[name] = timed(argv, full, work / f"{name}.out")
        finally:
            release_workdir(dib_work)
        made = dib_work / f"image.{fmt}"
        kept = work / f"{name}.{fmt}"
        made.replace(kept)
        sizes[name] = kept.stat().st_size
        shutil.rmtree(dib_work, ignore_errors=True)

    measured = ratios(seconds)
    misses = missed(measured)
    print("\n".join(build_table(seconds, sizes, measured, phases)))
    print(json.dumps({"mode": "build", "profile": args.profile, "seconds": seconds,
                      "size_bytes": sizes, "ratios": measured,
                      "targets": {ratio_name(*k): v for k, v in TARGETS.items()},
                      "phases": phases, "missed": misses, "ok": not misses,
                      "workdir": str(work) if args.workdir else None}))
    if not args.workdir:
        shutil.rmtree(work, ignore_errors=True)
    return 1 if misses else 0


# --------------------------------------------------------------------------
# boot

def agent_queue_declared(port: int, queue: str) -> bool:
    """The broker on 127.0.0.1:port has queue (the agent's RPC server
    declares guestagent.<guest_id> as it starts consuming)."""
    import amqp
    import kombu
    with kombu.Connection(hostname="127.0.0.1", port=port, userid="guest",
                          password="guest", virtual_host="/", connect_timeout=5) as conn:
        try:
            conn.default_channel.queue_declare(queue=queue, passive=True)
            return True
        except amqp.exceptions.NotFound:
            return False


class AgentWatch(threading.Thread):
    """From power-on: poll the broker every second for the agent's queue,
    then call rpc_ping until it answers.

    Polling rpc_ping alone would blur the figure: a call made before the
    agent's queue exists is dropped by the broker and only times out (20 s
    in wait_for_rpc); once the queue exists, a call waits there for the
    agent and is answered as soon as it can be."""

    def __init__(self, broker, guest_id: str, rpc_key, deadline: float = AGENT_DEADLINE):
        super().__init__(daemon=True, name="agent-watch")
        self.broker, self.guest_id, self.rpc_key = broker, guest_id, rpc_key
        self.deadline = deadline
        self.powered_on = None
        self.queue_seconds = self.rpc_seconds = self.answer = self.error = None
        self.done = threading.Event()
        self.cancelled = threading.Event()

    def power_on(self, guest) -> None:
        """booted()'s on_power_on."""
        self.powered_on = guest.powered_on
        self.start()

    def run(self):
        from trove_image_builder.vm.rabbit import wait_for_rpc
        try:
            end = self.powered_on + self.deadline
            queue = f"guestagent.{self.guest_id}"
            while not self.cancelled.is_set():
                try:
                    if agent_queue_declared(self.broker.port, queue):
                        break
                except Exception:  # noqa: BLE001 - the broker answers; not yet
                    pass
                if time.monotonic() > end:
                    raise BenchError(f"no queue {queue} within {self.deadline} s")
                time.sleep(1)
            else:
                return
            self.queue_seconds = round(time.monotonic() - self.powered_on, 1)
            self.answer, _ = wait_for_rpc(self.broker.url, self.guest_id,
                                          max(60, end - time.monotonic()),
                                          rpc_key=self.rpc_key)
            self.rpc_seconds = round(time.monotonic() - self.powered_on, 1)
        except Exception as exc:  # noqa: BLE001 - reported with the figures
            self.error = f"{type(exc).__name__}: {exc}"
        finally:
            self.done.set()


class BannerWatch(threading.Thread):
    """From power-on: seconds until sshd's banner comes through the forward
    (qemu's user network accepts the connection before the guest listens;
    the banner is sshd's)."""

    def __init__(self, deadline: float = AGENT_DEADLINE):
        super().__init__(daemon=True, name="banner-watch")
        self.deadline = deadline
        self.seconds = None
        self.cancelled = threading.Event()

    def power_on(self, guest) -> None:
        self.guest = guest
        self.start()

    def run(self):
        guest = self.guest
        while not self.cancelled.is_set() and \
                time.monotonic() - guest.powered_on < self.deadline:
            try:
                with socket.create_connection(("127.0.0.1", guest.ssh_port), timeout=3) as s:
                    s.settimeout(3)
                    if s.recv(8).startswith(b"SSH-"):
                        self.seconds = round(time.monotonic() - guest.powered_on, 1)
                        return
            except OSError:
                pass
            time.sleep(1)


def _ssh_text(guest, command: str, timeout: int = 120) -> str:
    proc = guest.ssh(command, timeout=timeout)
    return (proc.stdout + (proc.stderr if proc.returncode else "")).strip()


def analyze(guest, agent_unit: str) -> dict:
    """Once the agent has answered: where the boot went, read over ssh."""
    out = {}
    deadline = time.monotonic() + ANALYZE_WAIT
    while True:      # "Bootup is not yet finished" until every start job ends
        proc = guest.ssh("systemd-analyze", timeout=120)
        if proc.returncode == 0 or time.monotonic() > deadline:
            out["analyze"] = (proc.stdout + proc.stderr).strip()
            break
        time.sleep(5)
    out["blame"] = _ssh_text(guest, f"systemd-analyze blame --no-pager | head -{BLAME_LINES}")
    out["critical_chain"] = _ssh_text(
        guest, f"systemd-analyze critical-chain --no-pager {shlex.quote(agent_unit)}")
    # the kernel's start on the host's clock: the guest's uptime, read
    # halfway through an ssh round trip (firmware and loader are not in
    # systemd-analyze's figures in a VM)
    before = time.monotonic()
    proc = guest.ssh("cat /proc/uptime; systemctl show -p ExecMainStartTimestampMonotonic "
                     f"--value {shlex.quote(agent_unit)}", timeout=60)
    after = time.monotonic()
    try:
        uptime_line, started_us = proc.stdout.split("\n")[:2]
        kernel_at = (before + after) / 2 - float(uptime_line.split()[0])
        out["kernel"] = round(kernel_at - guest.powered_on, 1)
        if int(started_us):
            out["agent_unit_started"] = round(out["kernel"] + int(started_us) / 1e6, 1)
    except ValueError:
        pass
    return out


def boot_one(image: Path, broker) -> dict:
    from trove_image_builder.contract import expectations
    from trove_image_builder.vm.boot import booted, trove_files

    expect = expectations.load(image)
    injection, files = trove_files(expect)
    agent = expect.agent_install != "none"
    watch = AgentWatch(broker, injection.guest_id, injection.rpc_key)
    banner = BannerWatch()

    def power_on(guest):
        banner.power_on(guest)
        if agent:
            watch.power_on(guest)

    result = {"image": image.name, "path": str(image), "seconds": {}}
    print(f"benchmark: boot {image} (overlay; the image is not written)", file=sys.stderr)
    try:
        with booted(image, expect.guest_user, files, ((5672, broker.port),),
                    on_power_on=power_on) as guest:
            result["accel"] = guest.accel
            result["seconds"]["ssh_login"] = guest.boot_seconds
            print(f"benchmark: ssh login, cloud-init done after {guest.boot_seconds} s",
                  file=sys.stderr)
            if agent:
                watch.done.wait(max(0.0, guest.powered_on + AGENT_DEADLINE + 120
                                    - time.monotonic()))
                print(f"benchmark: rpc_ping answered after {watch.rpc_seconds} s",
                      file=sys.stderr)
            analysis = analyze(guest, expect.paths.agent_unit)
    except Exception as exc:  # noqa: BLE001 - one image's failure is reported
        result["error"] = f"{type(exc).__name__}: {exc}"
        return result
    finally:
        watch.cancelled.set()
        banner.cancelled.set()
    result["seconds"].update(kernel=analysis.pop("kernel", None),
                             agent_unit_started=analysis.pop("agent_unit_started", None),
                             agent_queue=watch.queue_seconds, rpc_ping=watch.rpc_seconds,
                             sshd_banner=banner.seconds)
    result.update(analysis)
    result["startup"] = parse_startup(analysis["analyze"])
    if agent:
        result["rpc_answer"] = watch.answer
        if watch.error or watch.answer is not True:
            result["error"] = watch.error or f"rpc_ping answered {watch.answer!r}"
    else:
        result["note"] = "agentless image: no rpc_ping"
    return result


def run_boot(args) -> int:
    from trove_image_builder.plumbing import host
    from trove_image_builder.vm.rabbit import LocalRabbit

    images = [Path(p).resolve() for p in args.boot]
    for image in images:
        if not image.is_file():
            raise BenchError(f"{image}: no such image file")
    if Path("/tmp/ci-running").exists() and not args.force:
        raise BenchError("/tmp/ci-running exists: CI is booting here; try later (or --force)")
    load_before = os.getloadavg()
    results = []
    with LocalRabbit() as broker:
        for image in images:
            results.append(boot_one(image, broker))
    print("\n".join(boot_table(results)))
    failed = [r["image"] for r in results if r.get("error")]
    print(json.dumps({"mode": "boot", "accel": host.accelerator(), "cpus": os.cpu_count(),
                      "load_before": [round(x, 2) for x in load_before],
                      "load_after": [round(x, 2) for x in os.getloadavg()],
                      "images": results, "failed": failed, "ok": not failed}))
    return 1 if failed else 0


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--boot", action="append", metavar="IMAGE",
                        help="boot IMAGE (its manifest beside it) and time it, instead of "
                             "the build benchmark; repeat for more images")
    parser.add_argument("--force", action="store_true",
                        help="boot even when /tmp/ci-running says CI is booting")
    parser.add_argument("--profile", default="prod-mariadb")
    parser.add_argument("--agent-version", default="25.1.0",
                        help="the release the agent-only rebuild switches to")
    parser.add_argument("--workdir", default=None,
                        help="where images and the caches go (default: a temp folder, "
                             "removed afterwards); its caches must be empty")
    parser.add_argument("--dry-run", action="store_true",
                        help="print the build benchmark's commands; build nothing")
    args = parser.parse_args(argv)
    try:
        return run_boot(args) if args.boot else run_build(args)
    except BenchError as exc:
        print(f"benchmark: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
