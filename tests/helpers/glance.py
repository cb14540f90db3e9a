"""A real Glance for the tests: glance from PyPI in a virtualenv of its own
(its pins are not Trove's), made once and kept in a cache folder, its API
served by uWSGI on 127.0.0.1 with the file store, SQLite and no Keystone.

    with Glance() as glance:         # a fresh data folder and database
        env = glance.env()           # OS_AUTH_TYPE=none, OS_ENDPOINT=...
        conn = glance.connect()      # openstacksdk, to read back

Facts this relies on (glance 33.0.0): the API's WSGI module is
glance/wsgi/api.py (``application``), which reads glance-api.conf from
OS_GLANCE_CONFIG_DIR (glance/common/wsgi_app.py); ``[paste_deploy] flavor``
empty picks the pipeline without Keystone, whose context
(glance/api/middleware/context.py UnauthenticatedContextMiddleware) has no
roles, so the policy file makes every caller the admin.
"""
import contextlib
import fcntl
import os
from pathlib import Path
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request

from trove_image_builder.plumbing.host import free_port

GLANCE = "glance==33.0.0"
UWSGI = "pyuwsgi==2.0.30.post1"


def cache_root() -> Path:
    """Where the venv is kept between runs: under TROVE_IMAGE_BUILDER_CACHE
    (the folder CI keeps) when set, else ~/.cache/trove-image-builder-tests."""
    base = os.environ.get("TROVE_IMAGE_BUILDER_CACHE")
    if base:
        return Path(base) / "tests"
    return Path.home() / ".cache" / "trove-image-builder-tests"


def venv(log=sys.stderr) -> Path:
    """The virtualenv with glance and uWSGI, made on first use (about 25 s
    from PyPI); a half-made one is made again."""
    where = cache_root() / f"glance-{GLANCE.split('==')[1]}"
    marker = where / ".complete"
    wanted = f"{GLANCE} {UWSGI}\n"
    where.parent.mkdir(parents=True, exist_ok=True)
    with open(where.parent / f".{where.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)      # one maker at a time
        if marker.is_file() and marker.read_text() == wanted:
            return where
        shutil.rmtree(where, ignore_errors=True)
        start = time.monotonic()
        subprocess.run([sys.executable, "-m", "venv", str(where)], check=True)
        proc = subprocess.run([str(where / "bin" / "pip"), "install", "-q", GLANCE, UWSGI],
                              capture_output=True, text=True)
        if proc.returncode:
            raise RuntimeError(f"installing {GLANCE} failed:\n{proc.stderr[-3000:]}")
        marker.write_text(wanted)
        print(f"glance venv made in {time.monotonic() - start:.1f} s: {where}", file=log)
    return where


CONF = """\
[DEFAULT]
enabled_backends = file:file
[glance_store]
default_backend = file
[file]
filesystem_store_datadir = {data}/images
[os_glance_staging_store]
filesystem_store_datadir = {data}/staging
[os_glance_tasks_store]
filesystem_store_datadir = {data}/tasks
[database]
connection = sqlite:///{data}/glance.sqlite
[paste_deploy]
flavor =
config_file = {venv}/etc/glance/glance-api-paste.ini
[oslo_policy]
policy_file = {data}/etc/policy.yaml
"""


class Glance:
    """One Glance API process group; start() gives it a fresh data folder."""

    def __init__(self, log=sys.stderr):
        self.log = log
        self.proc = None
        self.data = None
        self.port = None
        self.timings = {}

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self, base=None) -> dict:
        """The environment of a client of this Glance: no OS_* of the
        caller's, OS_AUTH_TYPE=none and OS_ENDPOINT."""
        env = {k: v for k, v in (base if base is not None else os.environ).items()
               if not k.startswith("OS_")}
        return {**env, "OS_AUTH_TYPE": "none", "OS_ENDPOINT": self.url}

    def connect(self):
        import openstack
        return openstack.connect(auth_type="none", auth={"endpoint": self.url},
                                 load_envvars=False, load_yaml_config=False)

    def start(self, timeout: float = 60) -> "Glance":
        start = time.monotonic()
        where = venv(self.log)
        self.timings["venv"] = round(time.monotonic() - start, 1)
        start = time.monotonic()
        self.data = Path(tempfile.mkdtemp(prefix="glance-"))
        for sub in ("etc", "images", "staging", "tasks"):
            (self.data / sub).mkdir()
        conf = self.data / "etc" / "glance-api.conf"
        conf.write_text(CONF.format(data=self.data, venv=where))
        (self.data / "etc" / "policy.yaml").write_text('"context_is_admin": "@"\n')
        subprocess.run([str(where / "bin" / "glance-manage"), "--config-file", str(conf),
                        "db_sync"], check=True, capture_output=True, text=True)
        self.port = free_port()
        self.logfile = self.data / "uwsgi.log"
        with open(self.logfile, "w") as out:
            self.proc = subprocess.Popen(
                [str(where / "bin" / "uwsgi"), "--http-socket", f"127.0.0.1:{self.port}",
                 "--module", "glance.wsgi.api:application", "--need-app",
                 "--master", "--processes", "1", "--threads", "4", "--enable-threads",
                 "--lazy-apps", "--die-on-term", "--buffer-size", "65535",
                 "--http-auto-chunked", "--http-raw-body",
                 # uWSGI's http-socket closes every connection after its
                 # answer: say so, or clients reuse a closed one (devstack
                 # sets the same header)
                 "--add-header", "Connection: close"],
                env={**self.env(), "OS_GLANCE_CONFIG_DIR": str(self.data / "etc")},
                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            self._wait(timeout)
        except BaseException:
            self.stop()
            raise
        self.timings["start"] = round(time.monotonic() - start, 1)
        print(f"glance {self.url} up in {self.timings['start']} s", file=self.log)
        return self

    def _wait(self, timeout: float):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"glance exited ({self.proc.returncode}):\n"
                                   + self.logfile.read_text()[-3000:])
            try:
                with urllib.request.urlopen(self.url + "/versions", timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"glance did not answer on {self.url} in {timeout} s:\n"
                           + self.logfile.read_text()[-3000:])

    def stop(self):
        """Stop the uWSGI process group; then remove the data folder."""
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError):   # workers left behind
                os.killpg(self.proc.pid, signal.SIGKILL)
        if self.data is not None:
            shutil.rmtree(self.data, ignore_errors=True)
            self.data = None

    def __enter__(self) -> "Glance":
        return self.start()

    def __exit__(self, *exc):
        self.stop()
