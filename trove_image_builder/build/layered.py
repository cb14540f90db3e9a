"""A build in layers (build/layers.py): decide, per layer, whether the
cached one can be reused, say why (``build --explain``), build what must be
built, and convert the top of the chain into one standalone image.

A layer is reused when an entry with its key is in the cache, younger than
the maximum age, and ``--refresh`` was not given; once a layer is rebuilt,
every layer above it is rebuilt too (an overlay is only valid on the very
file it was made on). A finished image with the same key (same layers,
backend, format) is reused whole."""
from dataclasses import asdict, dataclass
import os
from pathlib import Path
import shutil
import time

from ..plumbing import imagefs, log
from ..plumbing.runner import run
from . import chroot_layer
from .cache import LayerCache, age_days, max_bytes, when
from .layers import DEFAULT_MAX_AGE_DAYS, Layer, Layering, base_plan, resolve, search_paths
from .plan import BuildPlan


@dataclass
class Outcome:
    name: str                 # a layer's name, or "image"
    elements: tuple
    key: str
    reused: bool
    reason: str
    seconds: float | None = None

    def line(self) -> str:
        what = "reused" if self.reused else "rebuilt"
        elements = f" ({' '.join(self.elements)})" if self.elements else ""
        return f"{self.name:<6}{elements}: {what} [{self.key}]: {self.reason}"

    def to_dict(self) -> dict:
        return asdict(self) | {"elements": list(self.elements)}


def max_age_days() -> float:
    value = os.environ.get("TROVE_IMAGE_BUILDER_LAYER_MAX_AGE")
    try:
        return float(value) if value else DEFAULT_MAX_AGE_DAYS
    except ValueError:
        return DEFAULT_MAX_AGE_DAYS


def _changes(old: dict | None, new: dict) -> str:
    if old is None:
        return "no earlier build of this layer for this profile"
    changed = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
    if not changed:
        return "not in the cache (cleaned or evicted since the last build)"
    said = []
    for k in changed:
        if k == "below":
            said.append("the layer below changed")
        elif k not in new:
            said.append(f"{k} removed")
        elif k not in old:
            said.append(f"{k} added")
        else:
            said.append(f"{k} changed")
    return ", ".join(said)


def decide(plan: BuildPlan, layering: Layering, cache: LayerCache, backend: str,
           refresh: bool = False) -> tuple[list[Outcome], Outcome]:
    """What a build would reuse and rebuild, and why; changes nothing."""
    profile = plan.profile.name
    limit = max_age_days()
    outcomes: list[Outcome] = []
    lower_rebuilt = False
    for layer in layering.layers:
        entry = cache.lookup(layer.name, layer.key)
        if not layer.cacheable:
            reused, reason = False, "holds a per-build secret (the dev ssh key): never cached"
        elif refresh:
            reused, reason = False, "--refresh"
        elif lower_rebuilt:
            reused, reason = False, "the layer below is rebuilt"
        elif entry is None:
            reused, reason = False, _changes(cache.last_inputs(profile, layer.name),
                                             layer.inputs)
        elif age_days(entry) > limit:
            reused, reason = False, (f"built {when(entry.meta['created'])}, older than "
                                     f"{limit:g} days: rebuilt to take package updates")
        else:
            reused, reason = True, f"cached, built {when(entry.meta['created'])}"
        lower_rebuilt = lower_rebuilt or not reused
        outcomes.append(Outcome(layer.name, layer.elements, layer.key, reused, reason))
    key = layering.image_key(plan, backend)
    suffix = plan.profile.image.format
    entry = cache.lookup("image", key, suffix)
    if not layering.top.cacheable:
        image = Outcome("image", (), key, False, "its top layer is never cached")
    elif refresh:
        image = Outcome("image", (), key, False, "--refresh")
    elif entry is not None and age_days(entry) <= limit:
        image = Outcome("image", (), key, True,
                        f"the same finished image is cached ({when(entry.meta['created'])})")
        for o in outcomes:
            o.reused, o.reason = True, "not needed: the finished image is cached"
    else:
        image = Outcome("image", (), key, False,
                        "converted from the top layer" if not lower_rebuilt
                        else "a layer is rebuilt")
    return outcomes, image


def explain_lines(layering: Layering, outcomes: list[Outcome], image: Outcome) -> list[str]:
    return [*(f"note: {n}" for n in layering.notes), *(o.line() for o in outcomes),
            image.line()]


def build(plan: BuildPlan, layering: Layering, backend, workdir: Path, cache: LayerCache,
          log_path: Path, timings: dict, refresh: bool = False
          ) -> tuple[Path, list[Outcome], Outcome]:
    """Build (or reuse) every layer and the finished image in workdir;
    return its path and what was reused."""
    cache.clean_stale()
    outcomes, image = decide(plan, layering, cache, backend.name, refresh)
    for line in explain_lines(layering, outcomes, image):
        log.info(line)
    fmt = plan.profile.image.format
    final = workdir / f"image.{fmt}"
    if image.reused:
        entry = cache.lookup("image", image.key, fmt)
        with log.step("copy the cached image", timings, "layer.image"):
            _copy(entry.path, final)
        for used in [entry, *(cache.lookup(layer.name, layer.key) for layer in layering.layers)]:
            if used is not None:
                cache.touch(used)
        return final, outcomes, image
    below: Path | None = None
    log_path.write_text("")
    paths = search_paths(plan)
    folders_all = resolve(plan.elements, paths)
    env_folders = {n: f for n, f in folders_all.items() if not _is_dib(f)}
    for layer, outcome in zip(layering.layers, outcomes):
        started = time.monotonic()
        if outcome.reused:
            entry = cache.lookup(layer.name, layer.key)
            cache.touch(entry)
            below = entry.path
            continue
        with log.step(f"layer {layer.name}: {' '.join(layer.elements)}", timings,
                      f"layer.{layer.name}"):
            if layer.name == "base":
                below = _build_base(plan, layer, backend, workdir, cache, log_path, timings)
            else:
                below = _build_upper(plan, layer, below, workdir, cache, log_path,
                                     {n: folders_all[n] for n in layer.elements},
                                     env_folders)
        outcome.seconds = round(time.monotonic() - started, 1)
    with log.step(f"convert the layers into one {fmt} image", timings, "layer.convert"):
        run(imagefs.convert_argv(below, final, fmt, plan.profile.image.compression))
    if layering.top.cacheable:
        staged = cache.staging("image", image.key, fmt)
        _copy(final, staged)
        cache.store("image", image.key, staged,
                    {"below": layering.top.key, "profile": plan.profile.name}, fmt)
    used = {layer.key for layer in layering.layers} | {image.key}
    for gone in cache.evict(max_bytes(), keep=used):
        log.info(f"cache: removed {gone.path.name} (least recently used; "
                 "TROVE_IMAGE_BUILDER_CACHE_MAX bounds the cache)")
    return final, outcomes, image


def _is_dib(folder: Path) -> bool:
    from ..elements import dib_elements_dir
    dib = dib_elements_dir()
    return dib is not None and Path(folder).resolve().is_relative_to(dib.resolve())


def _copy(src: Path, dest: Path) -> None:
    run(["cp", "--sparse=always", "--reflink=auto", str(src), str(dest)])


def _build_base(plan, layer: Layer, backend, workdir: Path, cache: LayerCache,
                log_path: Path, timings: dict) -> Path:
    (workdir / "base").mkdir(exist_ok=True)
    made = backend.build(base_plan(plan, layer), workdir / "base", cache.root.parent,
                         log_path, timings)
    if not layer.cacheable:
        return made
    staged = cache.staging(layer.name, layer.key)
    shutil.move(made, staged)
    entry = cache.store(layer.name, layer.key, staged,
                        {"inputs": layer.inputs, "elements": list(layer.elements),
                         "profile": plan.profile.name})
    cache.record_last(plan.profile.name, layer.name, layer.inputs)
    return entry.path


def _build_upper(plan, layer: Layer, below: Path, workdir: Path, cache: LayerCache,
                 log_path: Path, folders: dict, env_folders: dict) -> Path:
    if layer.cacheable:
        overlay = cache.staging(layer.name, layer.key)
        backing = below.name if below.parent == overlay.parent else str(below)
    else:
        overlay = workdir / f"{layer.name}.qcow2"
        backing = str(below)
    overlay.unlink(missing_ok=True)
    run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", backing,
         str(overlay)], cwd=str(overlay.parent))
    try:
        chroot_layer.apply(overlay, layer.name, folders, env_folders, layer.env,
                           workdir, log_path)
    except BaseException:
        if layer.cacheable:
            overlay.unlink(missing_ok=True)
        raise
    cache.record_last(plan.profile.name, layer.name, layer.inputs)
    if not layer.cacheable:
        return overlay
    return cache.store(layer.name, layer.key, overlay,
                       {"inputs": layer.inputs, "elements": list(layer.elements),
                        "below": layer.inputs["below"], "below_file": below.name,
                        "profile": plan.profile.name}).path
