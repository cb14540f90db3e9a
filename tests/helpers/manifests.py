"""Manifests as a build writes them (the parts verify reads), made from a
shipped profile without building anything."""
import json
from pathlib import Path

from trove_image_builder import elements, profile as profiles
from trove_image_builder.build import stage
from trove_image_builder.build.manifest import contract_for
from trove_image_builder.contract import expectations


def contract(name="prod-mariadb", sets=(), dev_public_key=None, images=None,
             image="/images/x.qcow2"):
    """The Expectations a build of profile name would record."""
    known = elements.discover()
    prof = profiles.load(name, sets, known_elements=known)
    plan = stage.plan_for(prof, Path(image).with_suffix("." + prof.image.format), (), known)
    return contract_for(plan, dev_public_key, images).for_image(image)


def manifest(name="prod-mariadb", sets=(), **kwargs) -> dict:
    exp = contract(name, sets, **kwargs)
    prof = profiles.load(name, sets)
    return {"schema": 2, "profile": {"name": prof.name, "resolved": prof.to_dict()},
            "contract": exp.to_dict(), "dev_ssh_key": None}


def write(image: Path, name="prod-mariadb", sets=(), **kwargs) -> Path:
    """The manifest of a build of profile name, beside image."""
    path = expectations.manifest_path(Path(image))
    path.write_text(json.dumps(manifest(name, sets, **kwargs), indent=2))
    return path
