"""Benchmark, in one run, with a cache of its own:

  cold        a build of the profile with nothing cached (no layer, no DIB
              cache; the datastore image is made first, untimed, or taken
              from the user's cache)
  unchanged   the same build again                      target <= 5% of cold
  agent-only  another guest agent release (--agent-version): the base layer
              is reused, the agent layer and above are rebuilt
                                                        target <= 30% of cold
  plain DIB   disk-image-create with the same elements and variables, and
              the DIB cache the cold build left (a machine that built before)

Prints a table, the per-layer seconds of each build, then one JSON line;
exit code 1 when a target is missed."""
import argparse
import json
import os
from pathlib import Path
import shutil
import subprocess
import sys
import tempfile
import time

from trove_image_builder import elements, profile as profiles
from trove_image_builder.build import images, stage as build
from trove_image_builder.build.backends.dib import DibBackend
from trove_image_builder.build.cache import cache_dir
from trove_image_builder.plumbing.cleanup import release_workdir

TARGETS = {"unchanged": 0.05, "agent-only": 0.30}


def timed(argv, env, log):
    start = time.monotonic()
    with open(log, "w") as fh:
        rc = subprocess.run(argv, env=env, stdout=fh, stderr=subprocess.STDOUT).returncode
    elapsed = time.monotonic() - start
    if rc != 0:
        sys.exit(f"benchmark: {argv[0]} failed (exit {rc}); log: {log}")
    return round(elapsed, 1)


def layer_seconds(image: Path) -> dict:
    manifest = json.loads(image.with_name(image.name + ".manifest.json").read_text())
    report = manifest.get("layers") or {}
    out = {o["name"]: ("reused" if o["reused"] else o["seconds"])
           for o in report.get("layers", [])}
    t = manifest["timings"]
    out["convert"] = t.get("layer.convert")
    out["total"] = t.get("total")
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", default="prod-mariadb")
    parser.add_argument("--agent-version", default="25.1.0",
                        help="the release the agent-only rebuild switches to")
    parser.add_argument("--workdir", default=None,
                        help="where images and the cache go (default: a temp folder, "
                             "removed afterwards)")
    args = parser.parse_args()

    work = Path(args.workdir or tempfile.mkdtemp(prefix="tib-bench-")).resolve()
    work.mkdir(parents=True, exist_ok=True)
    cache = work / "cache"
    user_cache = cache_dir()
    env = dict(os.environ, TROVE_IMAGE_BUILDER_CACHE=str(cache))
    os.environ["TROVE_IMAGE_BUILDER_CACHE"] = str(cache)
    cli = [sys.executable, "-m", "trove_image_builder.cli", "build", args.profile]

    known = elements.discover()
    prof = profiles.load(args.profile, known_elements=known)
    # the datastore image is an input of every build here, not what is timed
    if (user_cache / "datastore-images").is_dir() and not (cache / "datastore-images").exists():
        cache.mkdir(parents=True, exist_ok=True)
        shutil.copytree(user_cache / "datastore-images", cache / "datastore-images")
    prepared = []
    preview = build.plan_for(prof, work / "plain.qcow2")
    if preview.datastore_image:
        made = build.build_datastore_image(preview.datastore_image, **build._mirrors(prof))
        prepared.append(images.PreparedImage(made.ref, made.archive, made.image_id,
                                             made.archive_sha256, made.size_bytes))

    res = {"profile": args.profile}
    print(f"benchmark: cold build of {args.profile} (empty cache {cache})", file=sys.stderr)
    res["cold"] = timed(cli + ["-o", str(work / "cold.qcow2")], env, work / "cold.out")
    print("benchmark: unchanged rebuild", file=sys.stderr)
    res["unchanged"] = timed(cli + ["-o", str(work / "unchanged.qcow2")], env,
                             work / "unchanged.out")
    print(f"benchmark: agent-only rebuild (guest agent {args.agent_version})", file=sys.stderr)
    res["agent-only"] = timed(cli + ["-o", str(work / "agent.qcow2"), "--set",
                                     f"guest_agent.version={args.agent_version}"],
                              env, work / "agent.out")

    print("benchmark: plain disk-image-create, same elements and variables", file=sys.stderr)
    dib_work = work / "plain"
    (dib_work / "tmp").mkdir(parents=True, exist_ok=True)
    inputs = {}
    if prepared:
        inputs["images_list"] = images.write_list(prepared, work / "images.list")
    plan = build.plan_for(prof, work / "plain.qcow2", **inputs)
    argv, dib_env = DibBackend().command(plan, dib_work, cache)
    full = {k: v for k, v in env.items() if not k.startswith("PIP_")}
    full.update(dib_env)
    try:
        res["plain-dib"] = timed(argv, full, work / "plain.out")
    finally:
        release_workdir(dib_work)

    res["layers"] = {name: layer_seconds(work / f"{name}.qcow2")
                     for name in ("cold", "unchanged", "agent")}
    res["ratios"] = {k: round(res[k] / res["cold"], 3) for k in TARGETS}
    res["ratios"]["cold/plain-dib"] = round(res["cold"] / res["plain-dib"], 3)
    res["targets"] = TARGETS
    res["ok"] = all(res["ratios"][k] <= limit for k, limit in TARGETS.items())
    for key in ("cold", "unchanged", "agent-only", "plain-dib"):
        ratio = res["ratios"].get(key)
        target = TARGETS.get(key)
        extra = f"  {ratio:.1%} of cold (target <= {target:.0%})" if target else ""
        print(f"{key:12} {res[key]:8.1f} s{extra}")
    for name, split in res["layers"].items():
        print(f"  {name:10} " + ", ".join(f"{k} {v}" for k, v in split.items()))
    print(json.dumps(res))
    if not args.workdir:
        shutil.rmtree(work, ignore_errors=True)
    return 0 if res["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
