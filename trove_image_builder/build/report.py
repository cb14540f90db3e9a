"""What a built image's manifest says, for people (``inspect``): a short
summary, and the size report of its ``sizes`` section (build/sizes.py)."""
from pathlib import Path

from ..contract.expectations import manifest_path, require_manifest
from ..errors import TroveImageBuilderError


class NoSizesError(TroveImageBuilderError):
    """The manifest was written before images recorded their sizes. Exit code 1."""


def load(image: Path) -> dict:
    """The manifest next to image (IMAGE.manifest.json)."""
    return require_manifest(image)


def sizes_of(image: Path, manifest: dict) -> dict:
    """The manifest's sizes section; an older image has none."""
    sizes = manifest.get("sizes")
    if not isinstance(sizes, dict):
        raise NoSizesError(f"{manifest_path(Path(image))} has no sizes section (the image "
                           "was built before sizes were recorded); rebuild the image")
    return sizes


def mib(n: int | None) -> str:
    return "-" if n is None else f"{n / 2 ** 20:,.1f} MiB"


def summary(manifest: dict) -> dict:
    """Profile, OS, datastore, agent and package count, from the manifest."""
    os_ = manifest.get("os") or {}
    ds = manifest.get("datastore")
    image = manifest.get("image") or {}
    return {
        "profile": (manifest.get("profile") or {}).get("name"),
        "variant": (manifest.get("profile") or {}).get("variant"),
        "os": (os_.get("os_release") or {}).get("PRETTY_NAME")
        or " ".join(filter(None, (os_.get("distro"), os_.get("release")))) or None,
        "datastore": " ".join(filter(None, (ds["name"], ds.get("version"))))
        + f" ({ds['runtime']})" if ds else None,
        "agent_version": (manifest.get("guest_agent") or {}).get("version"),
        "packages": len(manifest.get("packages") or {}),
        "image_bytes": image.get("size_bytes"),
        "built_at": manifest.get("built_at"),
    }


SUMMARY_LABELS = {"image_bytes": "image"}


def summary_lines(manifest: dict) -> list[str]:
    rows = [(SUMMARY_LABELS.get(name, name.replace("_", " ")),
             mib(value) if name == "image_bytes" else "-" if value is None else str(value))
            for name, value in summary(manifest).items()]
    width = max(len(label) for label, _ in rows)
    return [f"{label:{width}}  {value}" for label, value in rows]


def _section(rows: list, title: str, total: int | None, note: str, entries=()) -> None:
    rows.append((title, mib(total), note))
    rows.extend((f"  {e['name']}", mib(e["bytes"]), "") for e in entries)


def sizes_lines(manifest: dict, sizes: dict) -> list[str]:
    """The size report as a table: one line a section, its biggest
    contributors indented below; sizes in MiB (2**20 bytes)."""
    image = manifest.get("image") or {}
    rows: list[tuple[str, str, str]] = []
    virtual = image.get("virtual_size_bytes")
    _section(rows, "image", sizes.get("image_bytes"),
             f"{image.get('file', '')} ({image.get('format', '?')}"
             + (f", {mib(virtual)} virtual)" if virtual else ")"))
    fs = sizes["filesystem"]
    _section(rows, "filesystem", fs["files_bytes"],
             f"in files; {mib(fs['used_bytes'])} used of {mib(fs['size_bytes'])}")
    kernel = sizes["kernel"]
    _section(rows, "kernel", kernel["total_bytes"], "vmlinuz, initrd, modules",
             kernel["files"])
    venv = sizes.get("agent_venv")
    if venv is None:
        _section(rows, "agent venv", None, "none in the image")
    else:
        _section(rows, "agent venv", venv["total_bytes"],
                 f"{venv['path']}; top of site-packages:", venv["top"])
    pre = sizes.get("preloaded_images")
    if pre is None:
        _section(rows, "preloaded images", None, "none in the image")
    else:
        _section(rows, "preloaded images", pre["total_bytes"], pre["path"], pre["files"])
    pkgs = sizes["packages"]
    _section(rows, "packages", pkgs["total_bytes"],
             f"{pkgs['count']} installed (dpkg Installed-Size); top {len(pkgs['top'])}:",
             pkgs["top"])
    name_w = max(len(r[0]) for r in rows)
    size_w = max(len(r[1]) for r in rows)
    return [f"{name:{name_w}}  {size:>{size_w}}  {note}".rstrip()
            for name, size, note in rows]
