"""In-image paths and unit names, named once.

The elements get them from ``elements/trove-guest/environment.d/
05-trove-paths.bash`` (every element depends on trove-guest, so DIB sources
it in every build); this module reads the same file, so the Python side (the
checks, boot, the manifest) cannot drift from what the elements install.
An image's manifest records the paths it was built with, and verification
takes them from there.
"""
from dataclasses import asdict, dataclass, fields
import functools
import re

from .. import shipped_dir
from ..errors import InputError

PATHS_FILE = ("trove-guest", "environment.d", "05-trove-paths.bash")
_LINE = re.compile(r"^export (TROVE_(?:PATH|UNIT)_[A-Z_]+)=(/?[A-Za-z0-9._/-]+)$")


@dataclass(frozen=True)
class InImagePaths:
    conf: str                 # Trove's configuration folder
    injected: str             # where Trove injects guest_info.conf and the agent's config
    certs: str                # the agent's certificates (installed at boot, never built in)
    state: str
    log: str
    agent_venv: str           # the guest agent's virtualenv
    agent_unit: str           # its systemd unit
    cert_staging: str         # where the certificate hook takes delivered files from
    images: str               # preloaded container image archives
    dev_marker: str           # development images only
    # the agent's own folder: its prepare markers, written without sudo
    # (trove/guestagent/datastore/service.py, BaseDbStatus.GUESTAGENT_DIR)
    # (None in the manifests of images built before it was named here)
    agent_state: str | None = None

    @property
    def guest_info(self) -> str:
        return f"{self.injected}/guest_info.conf"

    @property
    def agent_conf(self) -> str:
        return f"{self.injected}/trove-guestagent.conf"

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict, where: str) -> "InImagePaths":
        names = {f.name for f in fields(cls)}
        required = names - ADDED_LATER
        if not isinstance(data, dict) or not required <= set(data) <= names:
            raise InputError(f"{where}: contract.paths must name exactly: "
                             f"{', '.join(sorted(names))}")
        return cls(**{k: str(v) for k, v in data.items()})


# Paths named after images were first built with a contract section: an
# older image's manifest lacks them, and the checks of what they name skip.
ADDED_LATER = {"agent_state"}


def _variable(field_name: str) -> str:
    if field_name == "agent_unit":
        return "TROVE_UNIT_AGENT"
    return "TROVE_PATH_" + field_name.upper()


def parse(text: str, where: str) -> InImagePaths:
    found = {}
    for n, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        m = _LINE.match(line)
        if not m:
            raise InputError(f"{where}: line {n}: expected 'export TROVE_PATH_NAME=/path'")
        found[m.group(1)] = m.group(2)
    values = {}
    for f in fields(InImagePaths):
        var = _variable(f.name)
        if var not in found:
            raise InputError(f"{where}: {var} is not set")
        values[f.name] = found.pop(var)
    if found:
        raise InputError(f"{where}: unknown name(s) {', '.join(sorted(found))}; "
                         "add them to contract/paths.py too")
    return InImagePaths(**values)


@functools.cache
def current() -> InImagePaths:
    """The paths the shipped elements install today."""
    path = shipped_dir("elements").joinpath(*PATHS_FILE)
    return parse(path.read_text(), str(path))


def variables(paths: InImagePaths | None = None) -> dict[str, str]:
    """The environment variables the elements see, by name."""
    paths = paths or current()
    return {_variable(k): v for k, v in paths.to_dict().items()}
