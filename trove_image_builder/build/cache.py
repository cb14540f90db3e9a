"""Where builds keep what they reuse: DIB's image cache, the
virt-customize base images, the datastore images, the dev loop's state."""
import os
from pathlib import Path


def cache_dir() -> Path:
    base = os.environ.get("TROVE_IMAGE_BUILDER_CACHE") or \
        Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "trove-image-builder"
    return Path(base)
