"""Where builds keep what they reuse: DIB's image cache, the
virt-customize base images, the datastore images, the dev loop's state,
and the build layers with the finished images (``layers/``).

A layer entry is ``layers/<layer>-<key>.qcow2`` with ``<same>.json`` beside
it (its inputs, the key of the layer below, when it was made and last used);
an upper layer is a qcow2 overlay whose backing file is named relative to
it, so the folder can move. ``image-<key>.<format>`` entries are finished,
standalone images. ``layers/last/`` remembers, per profile and layer, the
inputs of the last build, so that ``build --explain`` can say which input
changed. The folder is kept under a size bound (TROVE_IMAGE_BUILDER_CACHE_MAX,
default 30G), least recently used first; an entry goes with the entries
built on it."""
from dataclasses import dataclass
import datetime
import json
import os
from pathlib import Path
import re
import time

from ..errors import InputError

DEFAULT_MAX_BYTES = 30 << 30
SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)i?B?\s*$", re.I)


def cache_dir() -> Path:
    base = os.environ.get("TROVE_IMAGE_BUILDER_CACHE") or \
        Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "trove-image-builder"
    return Path(base)


def parse_size(text: str, what: str) -> int:
    m = SIZE_RE.match(str(text))
    if not m:
        raise InputError(f"{what}: {text!r} is not a size; write it like 20G or 500M")
    scale = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}[m.group(2).upper()]
    return int(float(m.group(1)) * scale)


def max_bytes() -> int:
    value = os.environ.get("TROVE_IMAGE_BUILDER_CACHE_MAX")
    return parse_size(value, "TROVE_IMAGE_BUILDER_CACHE_MAX") if value else DEFAULT_MAX_BYTES


@dataclass(frozen=True)
class Entry:
    kind: str             # a layer name, or "image"
    key: str
    path: Path
    meta: dict

    @property
    def size_bytes(self) -> int:
        try:
            return self.path.stat().st_blocks * 512
        except OSError:
            return 0

    @property
    def below(self) -> str | None:
        return self.meta.get("below")

    @property
    def last_used(self) -> float:
        return self.meta.get("last_used", self.meta.get("created", 0))


class LayerCache:
    def __init__(self, root: Path | None = None):
        self.root = Path(root) if root else cache_dir() / "layers"

    def path_for(self, kind: str, key: str, suffix: str = "qcow2") -> Path:
        return self.root / f"{kind}-{key}.{suffix}"

    def _meta_path(self, path: Path) -> Path:
        return path.with_name(path.name + ".json")

    def entries(self) -> list[Entry]:
        if not self.root.is_dir():
            return []
        found = []
        for meta_path in sorted(self.root.glob("*.json")):
            path = meta_path.with_name(meta_path.name[:-len(".json")])
            try:
                meta = json.loads(meta_path.read_text())
            except (OSError, ValueError):
                continue
            if path.is_file():
                found.append(Entry(meta.get("kind", "?"), meta.get("key", "?"), path, meta))
        return found

    def lookup(self, kind: str, key: str, suffix: str = "qcow2") -> Entry | None:
        """The entry, if it and every entry below it are present."""
        path = self.path_for(kind, key, suffix)
        meta_path = self._meta_path(path)
        if not (path.is_file() and meta_path.is_file()):
            return None
        try:
            meta = json.loads(meta_path.read_text())
        except (OSError, ValueError):
            return None
        below = meta.get("below_file")
        if below and not (self.root / below).is_file():
            return None
        return Entry(kind, key, path, meta)

    def staging(self, kind: str, key: str, suffix: str = "qcow2") -> Path:
        """Where to write an entry before store() moves it into place (in
        the cache folder: a relative backing file name stays right)."""
        self.root.mkdir(parents=True, exist_ok=True)
        return self.root / f".new-{kind}-{key}-{os.getpid()}.{suffix}"

    def store(self, kind: str, key: str, staged: Path, meta: dict,
              suffix: str = "qcow2") -> Entry:
        path = self.path_for(kind, key, suffix)
        old = self.lookup(kind, key, suffix)
        if old is not None:         # rebuilt: what was built on the old file goes
            self.remove(old)
        now = time.time()
        meta = {**meta, "kind": kind, "key": key, "created": now, "last_used": now}
        tmp_meta = staged.with_name(staged.name + ".json")
        tmp_meta.write_text(json.dumps(meta, indent=1, sort_keys=True) + "\n")
        os.replace(staged, path)
        os.replace(tmp_meta, self._meta_path(path))
        return Entry(kind, key, path, meta)

    def touch(self, entry: Entry) -> None:
        meta = {**entry.meta, "last_used": time.time()}
        tmp = self._meta_path(entry.path).with_suffix(".json.tmp")
        tmp.write_text(json.dumps(meta, indent=1, sort_keys=True) + "\n")
        os.replace(tmp, self._meta_path(entry.path))

    def remove(self, entry: Entry) -> list[Entry]:
        """Remove entry and every entry built on it; return what went."""
        gone = [entry]
        for other in self.entries():
            if other.below == entry.key and other.path != entry.path:
                gone += self.remove(other)
        entry.path.unlink(missing_ok=True)
        self._meta_path(entry.path).unlink(missing_ok=True)
        return gone

    def clean_stale(self) -> None:
        """Drop what interrupted builds left (.new-* files of dead pids)."""
        if not self.root.is_dir():
            return
        for path in self.root.glob(".new-*"):
            m = re.search(r"-(\d+)\.[a-z0-9]+(\.json)?$", path.name)
            if m and not Path(f"/proc/{m.group(1)}").exists():
                path.unlink(missing_ok=True)

    def total_bytes(self) -> int:
        return sum(e.size_bytes for e in self.entries())

    def evict(self, limit: int, keep=()) -> list[Entry]:
        """Remove least recently used entries until the folder fits limit;
        never the entries whose keys are in keep (what the current build
        uses)."""
        removed: list[Entry] = []
        keep = set(keep)
        while self.total_bytes() > limit:
            candidates = [e for e in self.entries() if e.key not in keep]
            if not candidates:
                break
            oldest = min(candidates, key=lambda e: e.last_used)
            removed += self.remove(oldest)
        return removed

    # what the last build of a profile's layer was made from (--explain)
    def _last_path(self, profile: str, kind: str) -> Path:
        safe = re.sub(r"[^A-Za-z0-9_.-]", "_", profile)
        return self.root / "last" / f"{safe}.{kind}.json"

    def last_inputs(self, profile: str, kind: str) -> dict | None:
        try:
            return json.loads(self._last_path(profile, kind).read_text())
        except (OSError, ValueError):
            return None

    def record_last(self, profile: str, kind: str, inputs: dict) -> None:
        path = self._last_path(profile, kind)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(inputs, indent=1, sort_keys=True) + "\n")


def age_days(entry: Entry) -> float:
    return (time.time() - entry.meta.get("created", 0)) / 86400


def when(ts: float) -> str:
    return datetime.datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M")
