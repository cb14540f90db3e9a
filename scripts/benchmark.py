"""Benchmark: a cold and a repeat build of a profile through
trove-image-builder, and the same elements and variables through plain
disk-image-create, with the same (warm) cache. The wrapper's overhead over
plain DIB must stay under 5%; exit code 1 when it does not."""
import argparse
import json
import os
from pathlib import Path
import shutil
import subprocess
import sys
import tempfile
import time

from trove_image_builder.build import stage as build
from trove_image_builder import elements, profile as profiles
from trove_image_builder.build.backends.dib import DibBackend
from trove_image_builder.plumbing.cleanup import release_workdir

LIMIT = 0.05


def timed(argv, env, log):
    start = time.monotonic()
    with open(log, "w") as fh:
        rc = subprocess.run(argv, env=env, stdout=fh, stderr=subprocess.STDOUT).returncode
    elapsed = time.monotonic() - start
    if rc != 0:
        sys.exit(f"benchmark: {argv[0]} failed (exit {rc}); log: {log}")
    return elapsed


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--profile", default="prod-mariadb")
    parser.add_argument("--rounds", type=int, default=1,
                        help="repeat and plain builds, alternated")
    parser.add_argument("--workdir", default=None, help="where images go (default: a temp dir)")
    args = parser.parse_args()

    work = Path(args.workdir or tempfile.mkdtemp(prefix="tib-bench-")).resolve()
    work.mkdir(parents=True, exist_ok=True)
    cache = work / "cache"
    env = dict(os.environ, TROVE_IMAGE_BUILDER_CACHE=str(cache))
    cli = [sys.executable, "-m", "trove_image_builder.cli", "build", args.profile]

    results = {"profile": args.profile, "cold": None, "repeat": [], "plain": []}
    print(f"benchmark: cold build of {args.profile} (empty cache {cache})", file=sys.stderr)
    results["cold"] = timed(cli + ["-o", str(work / "cold.qcow2")], env, work / "cold.out")

    prof = profiles.load(args.profile, known_elements=elements.discover())
    for n in range(args.rounds):
        print(f"benchmark: round {n + 1}: plain disk-image-create", file=sys.stderr)
        dib_work = work / f"plain-{n}"
        dib_work.mkdir()
        plan = build.plan_for(prof, work / f"plain-{n}.qcow2")
        argv, dib_env = DibBackend().command(plan, dib_work, cache)
        (dib_work / "tmp").mkdir()
        full = {k: v for k, v in env.items() if not k.startswith("PIP_")}
        full.update(dib_env)
        try:
            results["plain"].append(timed(argv, full, work / f"plain-{n}.out"))
        finally:
            release_workdir(dib_work)
        print(f"benchmark: round {n + 1}: trove-image-builder repeat build", file=sys.stderr)
        results["repeat"].append(timed(cli + ["-o", str(work / f"repeat-{n}.qcow2")],
                                       env, work / f"repeat-{n}.out"))

    repeat = min(results["repeat"])
    plain = min(results["plain"])
    overhead = repeat / plain - 1
    results.update(repeat_best=round(repeat, 1), plain_best=round(plain, 1),
                   overhead=round(overhead, 4), limit=LIMIT, ok=overhead < LIMIT)
    print(f"{'cold build (wrapper)':32} {results['cold']:8.1f} s")
    print(f"{'repeat build (wrapper)':32} {repeat:8.1f} s")
    print(f"{'plain disk-image-create':32} {plain:8.1f} s")
    print(f"{'wrapper / plain':32} {repeat / plain:8.3f}  (overhead {overhead:+.1%}, "
          f"limit {LIMIT:.0%})")
    print(json.dumps(results))
    if not args.workdir:
        shutil.rmtree(work, ignore_errors=True)
    return 0 if results["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
