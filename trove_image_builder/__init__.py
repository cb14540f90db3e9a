"""Build OpenStack Trove guest images from YAML profiles."""
from pathlib import Path
import sys

__version__ = "0.1.0"

_SOURCE_TREE = Path(__file__).resolve().parent.parent


def shipped_dir(name: str) -> Path:
    """Folder of shipped data ('elements' or 'profiles').

    In a checkout (or an editable install) it is beside the package; an
    installed copy finds it under the environment's share/ folder.
    """
    for candidate in (_SOURCE_TREE / name,
                      Path(sys.prefix) / "share" / "trove-image-builder" / name):
        if candidate.is_dir():
            return candidate
    return _SOURCE_TREE / name
