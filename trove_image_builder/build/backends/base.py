"""What a backend is: a name, what it needs from the host, what it would run
(``build --dry-run``) and the build itself. The CLI and the build stage use
nothing else of a backend."""
import abc
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from ...plumbing import host

if TYPE_CHECKING:           # the plan imports the profile, which imports the registry
    from ..plan import BuildPlan


class Backend(abc.ABC):
    """A way to turn a build plan into a disk image."""

    #: the name --backend and a profile's ``backend:`` use
    name: ClassVar[str]
    #: (tool, the Debian package that has it, what it is needed for)
    tools: ClassVar[tuple]
    #: whether build() can make the base layer of a layered build (a plan
    #: reduced to the base elements, written as an uncompressed qcow2)
    layered: ClassVar[bool] = True

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if not isinstance(getattr(cls, "name", None), str) or not cls.name:
            raise TypeError(f"backend {cls.__qualname__}: set 'name' to a non-empty string")
        if not isinstance(getattr(cls, "tools", None), tuple):
            raise TypeError(f"backend {cls.__qualname__}: set 'tools' to a tuple of "
                            "(tool, package, needed for)")

    def host_checks(self) -> list[host.Check]:
        """What the host must have for this backend: the common checks with
        this backend's tools; a backend adds its own by extending this."""
        return host.checks(self.tools)

    @abc.abstractmethod
    def describe(self, plan: "BuildPlan", workdir: Path, cache_dir: Path) -> list[str]:
        """The lines ``build --dry-run`` prints: what a build would run.
        Builds nothing and makes no folders."""

    @abc.abstractmethod
    def build(self, plan: "BuildPlan", workdir: Path, cache_dir: Path,
              log_path: Path, timings: dict) -> Path:
        """Build the image in workdir and return its path; the full log goes
        to log_path, phase durations into timings."""


#: the methods every backend implements (the registry test checks them)
INTERFACE = ("host_checks", "describe", "build")
