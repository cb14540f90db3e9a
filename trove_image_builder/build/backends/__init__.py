"""Backends execute a build plan. A small registry of names to import paths,
imported only when used, so that a backend's dependencies (libguestfs, ...)
are needed only by the builds that choose it. Every backend is a
:class:`~.base.Backend`."""
import contextlib
import importlib

from ...errors import InputError
from .base import Backend

REGISTRY: dict = {
    "dib": "trove_image_builder.build.backends.dib:DibBackend",
    "virt-customize": "trove_image_builder.build.backends.virt_customize:VirtCustomizeBackend",
}


def names() -> tuple:
    return tuple(REGISTRY)


def register(name: str, target) -> None:
    """Add a backend: ``"module:Class"`` (imported when first used) or a
    Backend subclass."""
    if name in REGISTRY:
        raise ValueError(f"a backend named {name!r} is already registered")
    if not isinstance(target, str) and not (
            isinstance(target, type) and issubclass(target, Backend)):
        raise TypeError(f"backend {name!r}: give 'module:Class' or a Backend subclass, "
                        f"not {target!r}")
    REGISTRY[name] = target


def unregister(name: str) -> None:
    del REGISTRY[name]


@contextlib.contextmanager
def registered(name: str, target):
    """A backend registered for the duration of a with block (tests)."""
    register(name, target)
    try:
        yield
    finally:
        unregister(name)


def backend_class(name: str) -> type:
    """The Backend subclass registered as ``name``, imported now."""
    try:
        target = REGISTRY[name]
    except KeyError:
        raise InputError(f"--backend {name}: unknown backend; choose one of: "
                         f"{', '.join(REGISTRY)}") from None
    if isinstance(target, str):
        module, _, attr = target.partition(":")
        target = getattr(importlib.import_module(module), attr)
    if not (isinstance(target, type) and issubclass(target, Backend)):
        raise TypeError(f"backend {name!r}: {REGISTRY[name]!r} is not a Backend subclass")
    return target


def get(name: str) -> Backend:
    """A new instance of the backend registered as ``name``."""
    return backend_class(name)()
