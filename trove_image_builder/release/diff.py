"""What differs between two built images, from their manifests.

Compared (the content): the OS (distro, release, VERSION_ID), the OS
packages, the guest agent (install, version, venv) and its Python packages,
the enabled services, the datastore (name, version, manager, runtime) and its
preloaded images (reference -> image ID). Two images with the same content
are equal even when built at other times: their built_at, SHA-256 and sizes
are shown, never compared (a rebuild of the same profile is not bit for bit
the same file).
"""
from pathlib import Path

from . import manifests

SECTIONS = ("os", "packages", "guest_agent", "services", "datastore")
TITLES = {"os": "os", "packages": "packages", "guest_agent": "guest agent",
          "services": "services", "datastore": "datastore"}


def load(path: Path) -> dict:
    """The manifest of an image or a manifest file; InputError when it is
    not the manifest of a built image."""
    manifest = manifests.load(Path(path)).manifest
    manifests.require_built(manifest, path)
    return manifest


def mapping_diff(a: dict, b: dict) -> dict:
    """name -> version maps: added and removed {name: version}, changed
    {name: [old, new]}."""
    return {"added": {k: b[k] for k in sorted(b.keys() - a.keys())},
            "removed": {k: a[k] for k in sorted(a.keys() - b.keys())},
            "changed": {k: [a[k], b[k]] for k in sorted(a.keys() & b.keys()) if a[k] != b[k]}}


def fields_diff(a: dict, b: dict, keys) -> dict:
    """{field: [old, new]} for the fields that differ."""
    return {k: [a.get(k), b.get(k)] for k in keys if a.get(k) != b.get(k)}


def _any(d: dict) -> bool:
    """Whether a mapping_diff() or a services diff holds anything."""
    return any(d.get(k) for k in ("added", "removed", "changed"))


def _os(m: dict) -> dict:
    os_info = m.get("os") or {}
    return {"distro": os_info.get("distro"), "release": os_info.get("release"),
            "version_id": (os_info.get("os_release") or {}).get("VERSION_ID")}


def _agent(m: dict) -> dict:
    agent = m.get("guest_agent") or {}
    return {k: agent.get(k) for k in ("install", "version", "venv")}


def _datastore(m: dict) -> dict:
    ds = m.get("datastore") or {}
    return {k: ds.get(k) for k in ("name", "version", "manager", "runtime")}


def _images(m: dict) -> dict:
    return {e["ref"]: e.get("image_id") for e in (m.get("datastore") or {}).get("images") or []}


def _side(path, m: dict) -> dict:
    info = m.get("image") or {}
    return {"path": str(path), "profile": (m.get("profile") or {}).get("name"),
            "built_at": m.get("built_at"), "sha256": info.get("sha256")}


def _size(a, b) -> dict:
    return {"a": a, "b": b, "delta": b - a if a is not None and b is not None else None}


def compare(a_path, a: dict, b_path, b: dict) -> dict:
    """The difference between manifests a and b (as one JSON-able dict):
    each section of SECTIONS, sizes and both sides for information, and
    whether the content is equal."""
    sa, sb = set(a.get("services_enabled") or []), set(b.get("services_enabled") or [])
    result = {
        "a": _side(a_path, a), "b": _side(b_path, b),
        "os": {"a": _os(a), "b": _os(b),
               "changed": fields_diff(_os(a), _os(b), ("distro", "release", "version_id"))},
        "packages": {"count": [len(a["packages"]), len(b["packages"])],
                     **mapping_diff(a["packages"], b["packages"])},
        "guest_agent": {
            "changed": fields_diff(_agent(a), _agent(b), ("install", "version", "venv")),
            "python_packages": mapping_diff(
                (a.get("guest_agent") or {}).get("python_packages") or {},
                (b.get("guest_agent") or {}).get("python_packages") or {})},
        "services": {"added": sorted(sb - sa), "removed": sorted(sa - sb)},
        "datastore": {
            "changed": fields_diff(_datastore(a), _datastore(b),
                                   ("name", "version", "manager", "runtime")),
            "images": mapping_diff(_images(a), _images(b))},
        "sizes": {
            "image_bytes": _size((a.get("image") or {}).get("size_bytes"),
                                 (b.get("image") or {}).get("size_bytes")),
            "root_fs_used_bytes": _size(
                ((a.get("sizes") or {}).get("filesystem") or {}).get("used_bytes"),
                ((b.get("sizes") or {}).get("filesystem") or {}).get("used_bytes"))},
    }
    g, d = result["guest_agent"], result["datastore"]
    differs = {"os": bool(result["os"]["changed"]), "packages": _any(result["packages"]),
               "guest_agent": bool(g["changed"]) or _any(g["python_packages"]),
               "services": _any(result["services"]),
               "datastore": bool(d["changed"]) or _any(d["images"])}
    differing = [s for s in SECTIONS if differs[s]]
    result["differences"] = differing
    result["equal"] = not differing
    return result


def diff(a_path: Path, b_path: Path) -> dict:
    """compare() of two images or manifest files."""
    return compare(a_path, load(a_path), b_path, load(b_path))


def human_bytes(n: int | None, signed: bool = False) -> str:
    """1234567 -> '1.2 MiB' (GiB from 10 GiB on: a root file system in MiB)."""
    if n is None:
        return "?"
    sign = ("+" if n >= 0 else "-") if signed else ("-" if n < 0 else "")
    n = abs(n)
    if n < 1024:
        return f"{sign}{n} B"
    for unit, limit in (("KiB", 1024), ("MiB", 10 * 1024)):
        n /= 1024
        if n < limit:
            return f"{sign}{n:.1f} {unit}"
    return f"{sign}{n / 1024:.1f} GiB"


def _mapping_lines(d: dict, indent: str = "  ", what: str = "") -> list[str]:
    lines = [f"{indent}- {what}{k} {v}" for k, v in d["removed"].items()]
    lines += [f"{indent}+ {what}{k} {v}" for k, v in d["added"].items()]
    lines += [f"{indent}~ {what}{k} {old} -> {new}" for k, (old, new) in d["changed"].items()]
    return lines


def _counts(d: dict) -> str:
    return (f"{len(d['added'])} added, {len(d['removed'])} removed, "
            f"{len(d['changed'])} changed")


def _os_text(o: dict) -> str:
    return f"{o['distro']} {o['release']} ({o['version_id']})"


def text_lines(r: dict) -> list[str]:
    """The difference as text: a section a line when it is the same, +/-/~
    lines under it when it is not; sizes last (shown, not compared)."""
    lines = []
    for side in ("a", "b"):
        s = r[side]
        lines.append(f"{side.upper()}: {s['path']} ({s['profile']}, built {s['built_at']}, "
                     f"sha256 {(s['sha256'] or '?')[:16]})")
    if r["os"]["changed"]:
        lines.append(f"os: {_os_text(r['os']['a'])} -> {_os_text(r['os']['b'])}")
    else:
        lines.append(f"os: the same, {_os_text(r['os']['a'])}")
    p = r["packages"]
    if "packages" in r["differences"]:
        lines.append(f"packages: {p['count'][0]} -> {p['count'][1]}: {_counts(p)}")
        lines += _mapping_lines(p)
    else:
        lines.append(f"packages: the same, {p['count'][0]}")
    g = r["guest_agent"]
    if "guest_agent" in r["differences"]:
        lines.append("guest agent:")
        lines += [f"  ~ {k}: {old} -> {new}" for k, (old, new) in g["changed"].items()]
        py = g["python_packages"]
        if _any(py):
            lines.append(f"  python packages: {_counts(py)}")
            lines += _mapping_lines(py, "    ")
    else:
        lines.append("guest agent: the same")
    s = r["services"]
    if "services" in r["differences"]:
        lines.append(f"services: {len(s['added'])} added, {len(s['removed'])} removed")
        lines += [f"  - {x}" for x in s["removed"]] + [f"  + {x}" for x in s["added"]]
    else:
        lines.append("services: the same")
    d = r["datastore"]
    if "datastore" in r["differences"]:
        lines.append("datastore:")
        lines += [f"  ~ {k}: {old} -> {new}" for k, (old, new) in d["changed"].items()]
        lines += _mapping_lines(d["images"], what="image ")
    else:
        lines.append("datastore: the same")
    lines.append("sizes (shown, not compared):")
    for key, title in (("image_bytes", "image"), ("root_fs_used_bytes", "root fs used")):
        z = r["sizes"][key]
        lines.append(f"  {title}: {human_bytes(z['a'])} -> {human_bytes(z['b'])} "
                     f"({human_bytes(z['delta'], signed=True)})")
    if r["equal"]:
        lines.append("the same content")
    else:
        lines.append("differ: " + ", ".join(TITLES[s] for s in r["differences"]))
    return lines
