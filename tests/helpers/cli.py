"""Running the command line: in this process with click's test runner, or
for real in a subprocess, as a user would."""
from pathlib import Path
import subprocess
import sys

from click.testing import CliRunner, Result

from trove_image_builder.cli import main

REPO = Path(__file__).resolve().parents[2]


def invoke(*args, env=None, **kwargs) -> Result:
    """Run `main` with click's test runner (no subprocess); kwargs go to
    main(), e.g. prog_name."""
    return CliRunner().invoke(main, list(args), env=env, **kwargs)


def assert_error(result: Result, message: str, exit_code: int = 2):
    """A clean failure: exit code, exactly one 'Error: ...' line, no traceback."""
    assert result.exit_code == exit_code, (result.output, result.exception)
    assert result.stderr == f"Error: {message}\n"
    assert result.stdout == ""
    assert "Traceback" not in result.output


def cli(*args, timeout=3600, **kwargs) -> subprocess.CompletedProcess:
    """Run the real command line in a subprocess, from the repository root."""
    return subprocess.run([sys.executable, "-m", "trove_image_builder.cli", *args],
                          cwd=REPO, text=True, capture_output=True, timeout=timeout,
                          **kwargs)
