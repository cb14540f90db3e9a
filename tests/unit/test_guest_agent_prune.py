"""The guest-agent element's venv pruning program, loaded from the element
(elements/guest-agent/static/usr/local/lib/guest-agent-build/prune_venv.py) and run on
a small fake venv."""
import importlib.util
from pathlib import Path

import pytest

PROGRAM = Path(__file__).resolve().parents[2] / \
    "elements/guest-agent/static/usr/local/lib/guest-agent-build/prune_venv.py"


@pytest.fixture(scope="module")
def prune():
    spec = importlib.util.spec_from_file_location("prune_venv", PROGRAM)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def dist(site: Path, name: str, files: dict[str, str], entry_points: str = "",
         requires=()) -> None:
    """A distribution as pip leaves it: its files and a dist-info with RECORD."""
    for rel, text in files.items():
        (site / rel).parent.mkdir(parents=True, exist_ok=True)
        (site / rel).write_text(text)
    info = site / f"{name}-1.0.dist-info"
    info.mkdir()
    meta = [f"Name: {name}"] + [f"Requires-Dist: {r}" for r in requires]
    (info / "METADATA").write_text("\n".join(meta) + "\n")
    (info / "top_level.txt").write_text("\n".join({f.split("/")[0] for f in files}))
    if entry_points:
        (info / "entry_points.txt").write_text(entry_points)
    record = [f"{rel},," for rel in files] + [f"{info.name}/{n},,"
                                              for n in ("METADATA", "RECORD")]
    (info / "RECORD").write_text("\n".join(record) + "\n")


@pytest.fixture
def venv(tmp_path):
    venv = tmp_path / "venv"
    site = venv / "lib/python3.12/site-packages"
    (venv / "bin").mkdir(parents=True)
    for name in ("pip", "pip3", "python3"):
        (venv / "bin" / name).write_text("#!/bin/sh\n")
    site.mkdir(parents=True)
    dist(site, "trove", {
        "trove/__init__.py": "",
        "trove/cmd/__init__.py": "",
        "trove/cmd/guest.py": "from trove.guestagent import api\nimport oslo_messaging\n",
        "trove/cmd/api.py": "import controllerlib\n",
        "trove/guestagent/__init__.py": "",
        "trove/guestagent/api.py": (
            "from oslo_utils import importutils\n"
            "def manager():\n"
            "    importutils.import_class('dynlib.manager.Manager')\n"),
        "trove/guestagent/datastore/__init__.py": "",
        "trove/guestagent/datastore/mariadb.py": (
            "try:\n    import optlib\nexcept ImportError:\n    optlib = None\n"),
        "trove/tests/__init__.py": "",
        "trove/tests/test_x.py": "import testlib\n",
    }, entry_points="[console_scripts]\ntrove-guestagent = trove.cmd.guest:main\n"
                    "trove-api = trove.cmd.api:main\n")
    dist(site, "oslo.messaging", {
        "oslo_messaging/__init__.py": (
            "def transport():\n"
            "    from stevedore import driver\n"
            "    driver.DriverManager('oslo.messaging.drivers', 'rabbit')\n"),
        "oslo_messaging/_drivers/__init__.py": "",
        "oslo_messaging/_drivers/impl_rabbit.py": "import kombu\n",
    }, entry_points="[oslo.messaging.drivers]\n"
                    "rabbit = oslo_messaging._drivers.impl_rabbit:RabbitDriver\n")
    dist(site, "stevedore", {"stevedore/__init__.py": "", "stevedore/driver.py": ""})
    dist(site, "kombu", {"kombu/__init__.py": "from . import transport\n",
                         "kombu/transport/__init__.py": "",
                         "kombu/tests/__init__.py": "", "kombu/tests/t.py": ""})
    dist(site, "oslo.utils", {"oslo_utils/__init__.py": "",
                              "oslo_utils/importutils.py": ""})
    dist(site, "dynlib", {"dynlib/__init__.py": "", "dynlib/manager.py": ""})
    dist(site, "optlib", {"optlib.py": ""})
    dist(site, "controllerlib", {"controllerlib/__init__.py": "",
                                 "controllerlib/__pycache__/__init__.cpython-312.pyc": "",
                                 "../../../bin/controller": "#!/bin/sh\n"})
    dist(site, "testlib", {"testlib/__init__.py": ""})
    dist(site, "pip", {"pip/__init__.py": ""})
    dist(site, "setuptools", {"setuptools/__init__.py": "", "_distutils_hack/__init__.py": "",
                              "distutils-precedence.pth": "import _distutils_hack\n"})
    return venv, site


def test_what_the_agent_loads_is_kept(prune, venv):
    venv, site = venv
    result = prune.plan(site, venv)
    closure = result["closure"]
    # the console script, a function's import, a try/except import, a string import
    assert {"trove.cmd.guest", "trove.guestagent.datastore.mariadb", "optlib",
            "dynlib.manager", "oslo_utils.importutils"} <= closure
    # stevedore namespace named by a literal: the rabbit driver and its kombu
    assert {"oslo_messaging._drivers.impl_rabbit", "kombu"} <= closure
    assert "trove.cmd.api" not in closure
    assert sorted(d.name for d in result["pruned"]) == \
        ["controllerlib", "pip", "setuptools", "testlib"]


def test_pruning_removes_files_but_keeps_metadata(prune, venv, capsys):
    venv, site = venv
    assert prune.main(["--site", str(site)]) == 0
    out = capsys.readouterr().out
    assert "4 distributions pruned: controllerlib, pip, setuptools, testlib" in out
    assert "bytes before" in out
    for gone in ("controllerlib", "testlib", "pip", "setuptools", "_distutils_hack",
                 "distutils-precedence.pth", "trove/tests", "kombu/tests"):
        assert not (site / gone).exists(), gone
    assert not (venv / "bin/controller").exists()
    assert not (venv / "bin/pip").exists() and not (venv / "bin/pip3").exists()
    assert (venv / "bin/python3").exists()
    for kept in ("trove/cmd/api.py", "trove/guestagent/api.py", "dynlib/manager.py",
                 "optlib.py", "kombu/transport/__init__.py", "stevedore/driver.py"):
        assert (site / kept).exists(), kept
    # every dist-info stays: requirement checks and entry points still read them
    assert len(list(site.glob("*.dist-info"))) == 11


def test_dry_run_removes_nothing(prune, venv):
    venv, site = venv
    assert prune.main(["--site", str(site), "--dry-run"]) == 0
    assert (site / "controllerlib/__init__.py").exists()
    assert (venv / "bin/pip").exists()


def test_a_test_package_the_agent_imports_stays(prune, venv):
    venv, site = venv
    (site / "trove/guestagent/datastore/mariadb.py").write_text("import kombu.tests.t\n")
    result = prune.plan(site, venv)
    assert site / "kombu/tests" not in result["test_dirs"]
    assert site / "trove/tests" in result["test_dirs"]


def test_an_extension_keeps_what_its_distribution_requires(prune, venv):
    venv, site = venv
    (site / "dynlib/_speedups.cpython-312-x86_64-linux-gnu.so").write_text("")
    record = site / "dynlib-1.0.dist-info/RECORD"
    record.write_text(record.read_text() + "dynlib/_speedups.cpython-312-x86_64-linux-gnu.so,,\n")
    meta = site / "dynlib-1.0.dist-info/METADATA"
    meta.write_text(meta.read_text() + "Requires-Dist: testlib>=1\n"
                    "Requires-Dist: controllerlib; extra == 'cli'\n")
    pruned = [d.name for d in prune.plan(site, venv)["pruned"]]
    assert "testlib" not in pruned and "controllerlib" in pruned
