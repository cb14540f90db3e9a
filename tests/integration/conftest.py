"""Real images, built once per test run and shared by the tests."""
import json
import os
from pathlib import Path
import subprocess
import sys

import pytest

REPO = Path(__file__).resolve().parents[2]


def cli(*args, timeout=3600, **kwargs) -> subprocess.CompletedProcess:
    """Run the real command line, as a user would."""
    return subprocess.run([sys.executable, "-m", "trove_image_builder.cli", *args],
                          cwd=REPO, text=True, capture_output=True, timeout=timeout,
                          **kwargs)


class BuiltImage:
    def __init__(self, path: Path, proc: subprocess.CompletedProcess):
        self.path = path
        self.proc = proc

    @property
    def manifest(self) -> dict:
        return json.loads(self.path.with_name(self.path.name + ".manifest.json").read_text())


@pytest.fixture(scope="session")
def images_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("images")


def _build(images_dir: Path, profile: str, *extra) -> BuiltImage:
    out = images_dir / f"{profile}.qcow2"
    proc = cli("build", profile, "-o", str(out), *extra)
    sys.stderr.write(proc.stderr[-3000:])
    assert proc.returncode == 0, proc.stderr[-3000:]
    return BuiltImage(out, proc)


@pytest.fixture(scope="session")
def prod_mariadb(images_dir) -> BuiltImage:
    """prod-mariadb built for real with DIB, once per run."""
    return _build(images_dir, "prod-mariadb")


@pytest.fixture(scope="session", autouse=True)
def _needs_root():
    if os.geteuid() != 0:
        pytest.skip("integration tests build images: run as root")
