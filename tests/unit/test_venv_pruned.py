"""The manifest's list of pruned agent distributions (metadata kept, code
gone), read from a virtualenv tree laid out as pip leaves it."""
from trove_image_builder.build.contents import venv_packages, venv_pruned

VENV = "/opt/guest-agent-venv"


def dist(site, name, version, files):
    info = site / f"{name}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    rows = [f"{f},sha256=x,1" for f in files]
    rows += [f"{info.name}/METADATA,,", f"{info.name}/RECORD,,"]
    (info / "RECORD").write_text("\n".join(rows) + "\n")
    for f in files:
        path = site / f
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("")


def test_a_distribution_whose_code_is_gone_is_pruned(tmp_path):
    site = tmp_path / VENV.lstrip("/") / "lib/python3.13/site-packages"
    dist(site, "pip", "26.3", ["pip/__init__.py", "../../../bin/pip"])
    dist(site, "trove", "26.0.0", ["trove/__init__.py"])
    dist(site, "rich", "15.0.0", ["rich/__init__.py", "rich/text.py"])
    for gone in ("pip/__init__.py", "../../../bin/pip", "rich/__init__.py"):
        (site / gone).unlink()
    # rich keeps one file: not pruned; pip lost everything: pruned
    assert venv_pruned(tmp_path, VENV) == ["pip"]
    assert set(venv_packages(tmp_path, VENV)) == {"pip", "trove", "rich"}


def test_no_venv_nothing_pruned(tmp_path):
    assert venv_pruned(tmp_path, VENV) == []
