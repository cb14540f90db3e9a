"""Profiles: YAML rendered with Jinja2, merged along ``extends``
(``loader``), parsed and given every default (``settings``), checked by
the Trove rules and frozen into one :class:`Profile` (``schema``).

What a loaded Profile holds is what is built: no setting is left for later
(``os.release`` is the distro's release, ``certificates.enabled`` is true
or false), so ``to_dict()``, ``digest()`` and the build manifest record it.

Relative paths (``guest_agent.path``, ``certificates.user_hook``,
``datastore.images[].archive``) are taken in the folder of the profile file
that sets them, or in the current folder when given with ``--set``; ``~`` is
expanded and they are made absolute when the profile loads. A template
variable is text: it becomes part of the file it is used in, unless the
template passes it through ``| abspath``, which takes it where the variable
was given (the file declaring it under ``variables:``, or the current folder
for ``--set NAME=VALUE``). The dev profiles do so with ``trove_source``.

The profile side never imports the build side (the backend names are asked
for when needed), nor verify, vm, contract or cli.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

from .. import shipped_dir
from . import loader, settings
from .loader import SET, deep_merge
from .schema import (DISTROS, FIRST_CONTAINER_AGENT, KERNELS, TOP_FIELDS, CertificatesSpec,
                     ContainerImage, DatastoreSpec, Distro, GuestAgentSpec, ImageSpec, OsSpec,
                     Profile, backend_names, describe_settings, validate)

__all__ = [
    "DISTROS", "FIRST_CONTAINER_AGENT", "KERNELS", "SET", "TOP_FIELDS", "CertificatesSpec",
    "ContainerImage", "DatastoreSpec", "Distro", "GuestAgentSpec", "ImageSpec", "OsSpec",
    "Profile", "available", "backend_names", "deep_merge", "describe_settings", "from_dict",
    "load", "locate", "matrix", "matrix_entry", "parse_sets", "profiles_dir",
]


def profiles_dir() -> Path:
    """The shipped profiles: the ones a name finds."""
    return shipped_dir("profiles")


def available() -> dict[str, Path]:
    return loader.available(profiles_dir())


def locate(ref: str, base: Path | None = None, referrer: Path | None = None) -> Path:
    """A profile by name (a shipped one) or by path (relative to base)."""
    return loader.locate(ref, profiles_dir(), base, referrer)


def parse_sets(sets) -> tuple[dict, list]:
    """--set KEY=VALUE: (template variables, [(dotted setting, value)])."""
    return loader.parse_sets(sets, TOP_FIELDS)


def load(ref: str, sets=(), known_elements=None) -> Profile:
    """Render, merge, resolve, validate and freeze the profile ``ref``.

    ``known_elements`` (from elements.discover) enables the element and
    datastore checks.
    """
    merged = loader.read(ref, profiles_dir(), sets, TOP_FIELDS)
    leaf = loader.display(merged.leaf)
    profile = settings.build(Profile, merged.data, leaf=leaf, provenance=merged.provenance,
                             base_of=merged.base_of)
    profile = dataclasses.replace(profile, source=str(merged.leaf))
    validate(profile, merged.provenance, leaf, known_elements)
    return profile


def from_dict(data: dict, source: str, known_elements=None) -> Profile:
    """A profile from its resolved form (as in a manifest, named by source).

    A setting missing or null there (a manifest written before its default
    was resolved at load) takes its default the same way; a relative path is
    taken beside the manifest.
    """
    profile = settings.build(Profile, data, leaf=source,
                             base_of=lambda _origin: Path(source).parent)
    profile = dataclasses.replace(profile, source=source)
    validate(profile, {}, source, known_elements)
    return profile


def matrix_entry(profile: Profile, path: Path) -> dict:
    """What a CI system fans out on, for one profile: its name, OS, datastore
    (None without one), variant, backend, and its file (relative to the
    folder holding the shipped profiles folder, e.g. profiles/NAME.yaml)."""
    ds = profile.datastore
    try:
        file = path.relative_to(profiles_dir().parent)
    except ValueError:
        file = path
    return {
        "name": profile.name,
        "os": {"distro": profile.os.distro, "release": profile.os.release},
        "datastore": None if ds is None else {
            "name": ds.name, "version": ds.version, "runtime": ds.runtime},
        "variant": profile.variant,
        "backend": profile.backend,
        "file": str(file),
    }


def matrix(known_elements=None) -> list[dict]:
    """Every shipped profile as matrix_entry describes it, by name; an
    invalid one raises its ProfileError (``known_elements`` as for load)."""
    return [matrix_entry(load(name, known_elements=known_elements), path)
            for name, path in sorted(available().items())]


def __getattr__(name):
    if name == "BACKENDS":     # the registered backends, asked for when used
        return backend_names()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
