"""Whether the guest agent can run on the image's Python.

The guest-agent element makes the agent's virtualenv from the image's own
``python3``, so a Trove release whose ``Requires-Python`` that Python does
not meet cannot be installed there. The two tables below are the facts the
rule needs, kept in this one place; :func:`mismatch` applies them.
"""
from __future__ import annotations

import configparser
from dataclasses import dataclass
from pathlib import Path
import tomllib

from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import InvalidVersion, Version

# The python3 of each OS release, read from the python3 package of the
# release's main archive (dists/<release>/main/binary-amd64/Packages):
# bookworm 3.11.2-1+b1, trixie 3.13.5-1 (deb.debian.org); jammy
# 3.10.4-0ubuntu2, noble 3.12.3-0ubuntu1 (archive.ubuntu.com).
OS_PYTHON = {
    ("debian", "bookworm"): "3.11",
    ("debian", "trixie"): "3.13",
    ("ubuntu", "jammy"): "3.10",
    ("ubuntu", "noble"): "3.12",
}

# Requires-Python of each Trove release, as its wheel on PyPI declares it
# (trove-<version>.dist-info/METADATA; the sdists' PKG-INFO agree). Releases
# before 18.0.0 declare none. A release never asks for less than the one
# before it, so a release missing here (a newer one) needs at least what the
# newest one listed below it needs.
AGENT_REQUIRES_PYTHON = {
    "18.0.0": ">=3.8", "18.0.1": ">=3.8",
    "19.0.0": ">=3.8", "19.0.1": ">=3.8",
    "20.0.0": ">=3.8",
    "21.0.0": ">=3.8", "21.1.0": ">=3.8",
    "22.0.0": ">=3.8", "22.0.1": ">=3.8",
    "23.0.0": ">=3.9", "23.1.0": ">=3.9",
    "24.0.0": ">=3.10", "24.1.0": ">=3.10",
    "25.0.0": ">=3.10", "25.1.0": ">=3.10",
    "26.0.0": ">=3.11",
}


@dataclass(frozen=True)
class Mismatch:
    field: str        # the dotted setting the error names
    message: str


def os_python(distro: str, release: str) -> str | None:
    """The python3 version (major.minor) of an OS release, if known here."""
    return OS_PYTHON.get((distro, release))


def _releases() -> list[Version]:
    return sorted(Version(v) for v in AGENT_REQUIRES_PYTHON)


def release_requires(version: str) -> SpecifierSet | None:
    """The Requires-Python of a Trove release: its own, or for one missing
    from the table that of the newest release listed below it; None when
    no release that old declares one (or the version is not a version)."""
    try:
        wanted = Version(str(version))
    except InvalidVersion:
        return None
    below = [v for v in _releases() if v <= wanted]
    if not below:
        return None
    return SpecifierSet(AGENT_REQUIRES_PYTHON[str(below[-1])])


def newest_release_for(python: str) -> str | None:
    """The newest Trove release in the table that runs on python."""
    fits = [v for v in _releases()
            if SpecifierSet(AGENT_REQUIRES_PYTHON[str(v)]).contains(python)]
    return str(fits[-1]) if fits else None


def tree_requires(path: str | Path) -> tuple[SpecifierSet, str] | None:
    """The Requires-Python of a source tree and where it was read:
    setup.cfg's python_requires, else pyproject.toml's requires-python.
    None when neither can be read."""
    tree = Path(path)
    parser = configparser.ConfigParser(interpolation=None, strict=False)
    try:
        parser.read(tree / "setup.cfg")
    except (configparser.Error, OSError, UnicodeDecodeError):
        parser = configparser.ConfigParser(interpolation=None)
    for section in ("metadata", "options"):
        value = parser.get(section, "python_requires", fallback=None)
        spec = _spec(value)
        if spec is not None:
            return spec, "setup.cfg python_requires"
    try:
        project = tomllib.loads((tree / "pyproject.toml").read_text()).get("project", {})
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return None
    spec = _spec(project.get("requires-python") if isinstance(project, dict) else None)
    return (spec, "pyproject.toml requires-python") if spec is not None else None


def _spec(value) -> SpecifierSet | None:
    if not isinstance(value, str) or not value.strip():
        return None
    try:
        return SpecifierSet(value.strip())
    except InvalidSpecifier:
        return None


def mismatch(distro: str, release: str, install: str, version: str | None,
             path: str | None) -> Mismatch | None:
    """What is wrong when the agent cannot run on the OS release's Python;
    None when it can, or when a fact is unknown here."""
    python = os_python(distro, release)
    if python is None:
        return None
    if install == "release" and version:
        spec = release_requires(version)
        field, what, source = "guest_agent.version", f"the Trove {version} guest agent", \
            "its Requires-Python"
    elif install == "source" and path:
        found = tree_requires(path)
        spec, source = found if found else (None, "")
        field, what = "guest_agent.path", f"the Trove tree at {path}"
    else:
        return None
    if spec is None or spec.contains(python):
        return None
    fit = newest_release_for(python)
    advice = (f"the newest agent release that runs there is {fit}" if fit
              else "no Trove release known here runs there")
    return Mismatch(field, f"{what} needs Python {spec} ({source}) and "
                           f"{distro.capitalize()} {release} has Python {python}; {advice}")
