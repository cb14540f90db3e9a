"""Backends execute a build plan. A small registry of names to import paths,
imported only when used, so that a backend's dependencies (libguestfs, ...)
are needed only by the builds that choose it."""
import importlib

from ...errors import InputError

REGISTRY = {
    "dib": "trove_image_builder.build.backends.dib:DibBackend",
    "virt-customize": "trove_image_builder.build.backends.virt_customize:VirtCustomizeBackend",
}


def names() -> tuple:
    return tuple(REGISTRY)


def get(name: str):
    """An instance of the backend registered as ``name``."""
    try:
        target = REGISTRY[name]
    except KeyError:
        raise InputError(f"--backend {name}: unknown backend; choose one of: "
                         f"{', '.join(REGISTRY)}") from None
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)()
