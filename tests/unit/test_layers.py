"""The package's layers, read from its imports (ast, no import run):

    cli                        the command line: composes everything below
    release                    publish, register, SBOM, diff: reads manifests only
    build    |  verify         the two sides: never import each other
    profile, elements          (build side)  |  vm  (qemu, broker; verify side and dev tools)
    contract                   what an image must hold: both sides read it
    plumbing, errors           host tools, mounts, cleanup, progress lines

A module may import its own package and the layers this table allows."""
import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "trove_image_builder"
ROOT = "trove_image_builder"

# top-level unit -> the units it may import (besides itself)
ALLOWED = {
    "cli": {"build", "verify", "profile", "elements", "vm", "contract", "plumbing", "errors",
            "release", "__init__"},
    "release": {"contract", "plumbing", "errors", "__init__"},
    "build": {"profile", "elements", "contract", "plumbing", "errors", "__init__"},
    "verify": {"vm", "contract", "plumbing", "errors", "__init__"},
    "profile": {"elements", "plumbing", "errors", "__init__", "build.backends"},
    "elements": {"plumbing", "errors", "__init__"},
    "vm": {"contract", "plumbing", "errors", "__init__"},
    "contract": {"plumbing", "errors", "__init__"},
    "plumbing": {"errors", "__init__"},
    "errors": set(),
    "__init__": set(),
}


def unit_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def imports_of(path: Path) -> set[str]:
    """Absolute names of the package's modules that path imports."""
    here = module_name(path).split(".")
    package = here if path.name == "__init__.py" else here[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith(ROOT)}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[:len(package) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if not target.startswith(ROOT):
                continue
            for alias in node.names:
                # 'from .. import elements' names a module; 'from ..errors import X' does not
                candidate = f"{target}.{alias.name}"
                is_module = (PACKAGE.parent / candidate.replace(".", "/")).with_suffix(
                    ".py").is_file() or (PACKAGE.parent / candidate.replace(".", "/")).is_dir()
                found.add(candidate if is_module else target)
    return found


def allowed(importer: str, imported: str) -> bool:
    unit, target = unit_of(importer), unit_of(imported)
    if unit == target:
        return True
    rules = ALLOWED[unit]
    dotted = ".".join(imported.split(".")[1:3])
    return target in rules or dotted in rules


MODULES = sorted(PACKAGE.rglob("*.py"))


def test_every_unit_is_in_the_table():
    units = {unit_of(module_name(p)) for p in MODULES}
    assert units <= set(ALLOWED), f"add these to the layer table: {units - set(ALLOWED)}"


@pytest.mark.parametrize("path", MODULES, ids=lambda p: module_name(p))
def test_imports_follow_the_layers(path):
    importer = module_name(path)
    wrong = sorted(m for m in imports_of(path) if not allowed(importer, m))
    assert not wrong, f"{importer} imports {wrong}, which its layer may not"


def test_the_build_and_verify_sides_never_import_each_other():
    assert "verify" not in ALLOWED["build"] and "build" not in ALLOWED["verify"]
    assert not ALLOWED["verify"] & {"profile", "elements"}


def test_the_checker_sees_a_forbidden_import(tmp_path):
    """The test can fail: a verify module importing the build side is caught."""
    bad = PACKAGE / "verify" / "_layer_probe.py"
    bad.write_text("from ..build import stage\nfrom ..contract import paths\n")
    try:
        found = imports_of(bad)
        assert "trove_image_builder.build.stage" in found
        assert not allowed("trove_image_builder.verify._layer_probe",
                           "trove_image_builder.build.stage")
        assert allowed("trove_image_builder.verify._layer_probe",
                       "trove_image_builder.contract.paths")
    finally:
        bad.unlink()
